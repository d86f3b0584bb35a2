"""An async job whose init_context opens something tied to its event loop."""

import asyncio


async def init_context(context):
    context.user_data.loop = asyncio.get_running_loop()


async def same_loop(context, event):
    """Whether it runs on the loop its init_context ran on (a session opened there works)."""
    return {"same_loop": asyncio.get_running_loop() is context.user_data.loop}
