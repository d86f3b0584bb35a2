"""Deployed from function.yaml beside it, exactly as Nuclio would deploy it."""


def handler(context, event):
    context.logger.info_with("scoring", fields=event.fields)
    amount = float(event.fields.get("amount", "0"))
    return {"amount": amount, "suspicious": amount > 1000}
