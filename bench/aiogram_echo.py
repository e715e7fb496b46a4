"""aiogram 3 echo bot for the botfleet benchmark, as aiogram's echo example
writes one (Dispatcher, a message handler, start_polling), pointed at the
sandbox.

Usage: aiogram_echo.py TOKEN SANDBOX_URL
"""

import asyncio
import logging
import sys

from aiogram import Bot, Dispatcher
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.types import Message

dp = Dispatcher()


@dp.message()
async def echo(message: Message) -> None:
    await message.answer(message.text)


async def main() -> None:
    token, sandbox = sys.argv[1], sys.argv[2].rstrip("/")
    session = AiohttpSession(api=TelegramAPIServer.from_base(sandbox))
    bot = Bot(token=token, session=session)
    await dp.start_polling(bot, polling_timeout=30, handle_signals=True)


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(main())
