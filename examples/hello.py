"""A handler in the style of Nuclio's Python examples: init_context, structured logs, Response."""

import nuclio_sdk


def init_context(context):
    # runs once per worker: load models, open connections, keep them in user_data
    context.user_data.greeting = "Hello"
    context.logger.info_with("worker ready", worker=context.worker_id)


def handler(context, event):
    name = event.body.get("name") if isinstance(event.body, dict) else None
    if not name:
        return context.Response(body={"error": 'send JSON like {"name": "Ada"}'},
                                content_type="application/json", status_code=400)
    context.logger.info_with("greeting", name=name)
    return nuclio_sdk.Response(body={"message": f"{context.user_data.greeting}, {name}!"},
                               headers={"X-Greeter": "sluice"},
                               content_type="application/json", status_code=200)
