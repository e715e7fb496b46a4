"""python-telegram-bot echo bot for the botfleet benchmark.

Usage: ptb_echo.py TOKEN SANDBOX_URL

One process per bot, as users run it: answers every text message with the
same text, long-polling the sandbox with timeout=30 and poll_interval=0.
"""

import logging
import sys

from telegram import Update
from telegram.ext import Application, ContextTypes, MessageHandler, filters


async def echo(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    await update.message.reply_text(update.message.text)


def main() -> None:
    token, sandbox = sys.argv[1], sys.argv[2].rstrip("/")
    logging.basicConfig(level=logging.WARNING)
    app = (
        Application.builder()
        .token(token)
        .base_url(f"{sandbox}/bot")
        .base_file_url(f"{sandbox}/file/bot")
        .build()
    )
    app.add_handler(MessageHandler(filters.TEXT, echo))
    app.run_polling(timeout=30, poll_interval=0)


if __name__ == "__main__":
    main()
