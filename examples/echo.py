"""Echo: returns the request body, as Nuclio's hello-world functions do."""


def handler(context, event):
    return event.body
