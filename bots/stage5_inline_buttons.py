"""Stage 5: inline buttons that still work after a restart - arbitrary callback data on SQLite.

``/menu`` sends a shop menu. Each button carries a Python object, not a string: the tuple
``(product, quantity)``, e.g. ``("pear", 6)``. Pressing it adds that to the cart in
``context.user_data`` and edits the menu message to show the cart. ``/cart`` shows the cart.

Telegram only lets a button carry 64 bytes of text. With ``arbitrary_callback_data`` PTB keeps the
real objects in a cache in the bot and sends Telegram a random id instead; when the button is
pressed, it looks the id up and hands the handler the object. That cache lives in memory, so
without persistence every button sent before a restart is dead afterwards. ``SQLitePersistence``
stores it (``update_callback_data``) and loads it back at start-up (``get_callback_data``).

A press PTB cannot resolve - the keyboard was dropped from the cache, or the data did not come from
this bot - arrives as a ``telegram.ext.InvalidCallbackData``. A ``CallbackQueryHandler`` with
``pattern=InvalidCallbackData`` answers it with a friendly note and a fresh menu.

The cache is bounded: ``arbitrary_callback_data=True`` keeps the 1024 keyboards used most recently,
an int N keeps N. After a press the old keyboard is dropped (``context.drop_callback_data``), since
the edited message carries a new one - so the cache holds about one keyboard per open menu.

Run it::

    python -m bots.stage5_inline_buttons            # offline chat: /menu, then /click apple +1
    python -m bots.stage5_inline_buttons --demo     # scripted conversation with a restart
    BOT_TOKEN=123:ABC python -m bots.stage5_inline_buttons   # on Telegram

The data file is ``./stage5.sqlite3``; choose another with ``--file PATH`` or ``STAGE5_FILE``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from telegram import InlineKeyboardButton, InlineKeyboardMarkup, Update
from telegram.ext import (
    Application,
    ApplicationBuilder,
    BasePersistence,
    CallbackQueryHandler,
    CommandHandler,
    ContextTypes,
    InvalidCallbackData,
)
from telegram.request import BaseRequest

from bots.commands import UNKNOWN_COMMAND
from bots.logs import log_error
from bots.offline import OFFLINE_TOKEN, OfflineChat, Stage, run_stage
from persistence.sqlite import DatabaseFileError, SQLitePersistence

PRODUCTS = ("apple", "pear", "cheese")
QUANTITIES = (1, 6)
EMPTY_CART = "empty the cart"
"""The payload of the button that empties the cart (a payload can be any object, a str too)."""

MENU_TEXT = "What would you like? Each button adds to your cart."
EXPIRED = "Sorry, that button has expired. Here is a fresh menu."


def menu_keyboard() -> InlineKeyboardMarkup:
    """Buttons whose ``callback_data`` is a ``(product, quantity)`` tuple - PTB keeps the tuple
    and sends Telegram a random id in its place."""
    rows = [
        [InlineKeyboardButton(f"{product} +{quantity}", callback_data=(product, quantity))
         for quantity in QUANTITIES]
        for product in PRODUCTS
    ]
    rows.append([InlineKeyboardButton("empty the cart", callback_data=EMPTY_CART)])
    return InlineKeyboardMarkup(rows)


def is_cart_item(data: object) -> bool:
    """``pattern`` of the add-to-cart handler: a ``(product name, quantity)`` tuple."""
    return (isinstance(data, tuple) and len(data) == 2 and data[0] in PRODUCTS
            and isinstance(data[1], int))


def format_cart(cart: dict[str, int]) -> str:
    """``Your cart: 7 x apple, 1 x pear`` (in the order the products were first added)."""
    if not cart:
        return "Your cart is empty."
    return "Your cart: " + ", ".join(f"{quantity} x {product}" for product, quantity in cart.items())


async def menu(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Send the menu (``/menu`` and ``/start``)."""
    await update.effective_message.reply_text(MENU_TEXT, reply_markup=menu_keyboard())


async def add_to_cart(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """A product button: ``query.data`` is the very tuple the button was made with."""
    query = update.callback_query
    product, quantity = query.data
    cart = context.user_data.setdefault("cart", {})
    cart[product] = cart.get(product, 0) + quantity
    await query.answer(f"Added {quantity} x {product}")
    await query.edit_message_text(f"{format_cart(cart)}\n{MENU_TEXT}", reply_markup=menu_keyboard())
    # The message now has a new keyboard; the old one's objects are no longer needed.
    context.drop_callback_data(query)


async def empty_cart(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """The "empty the cart" button."""
    query = update.callback_query
    context.user_data["cart"] = {}
    await query.answer("Your cart is empty now")
    await query.edit_message_text(f"{format_cart({})}\n{MENU_TEXT}", reply_markup=menu_keyboard())
    context.drop_callback_data(query)


async def expired_button(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """A press PTB could not resolve: ``query.data`` is an ``InvalidCallbackData``. Say so and
    replace the dead keyboard with a working one, instead of leaving the user with a spinner."""
    query = update.callback_query
    await query.answer(EXPIRED, show_alert=True)
    await query.edit_message_text(EXPIRED + "\n" + MENU_TEXT, reply_markup=menu_keyboard())


async def show_cart(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """``/cart``: what is in the cart, from ``user_data``."""
    await update.effective_message.reply_text(format_cart(context.user_data.get("cart", {})))


def build_application(
    token: str | None = None,
    persistence: BasePersistence | None = None,
    request: BaseRequest | None = None,
    *,
    arbitrary_callback_data: bool | int = True,
) -> Application:
    """The shop bot over ``persistence``. ``arbitrary_callback_data``: ``True`` caches up to 1024
    keyboards, an int N caps the cache at N (PTB drops the least recently used keyboard beyond
    that). ``request`` replaces PTB's HTTP layer (the offline Bot API in tests, notebooks and the
    terminal chat; ``None`` keeps PTB's own)."""
    builder = (
        ApplicationBuilder()
        .token(token or OFFLINE_TOKEN)
        .persistence(persistence)
        .arbitrary_callback_data(arbitrary_callback_data)
    )
    if request is not None:
        builder.request(request).get_updates_request(request)
    app = builder.build()
    app.add_handler(CommandHandler(["start", "menu"], menu))
    app.add_handler(CommandHandler("cart", show_cart))
    app.add_handler(CallbackQueryHandler(add_to_cart, pattern=is_cart_item))
    app.add_handler(CallbackQueryHandler(empty_cart, pattern=lambda data: data == EMPTY_CART))
    app.add_handler(CallbackQueryHandler(expired_button, pattern=InvalidCallbackData))
    app.add_handler(UNKNOWN_COMMAND)  # last: answers the commands the handlers above leave
    app.add_error_handler(log_error)
    return app


def make_persistence(path: Path, serializer: Literal["json", "pickle"] = "json") -> SQLitePersistence:
    """The cart (``user_data``) and the buttons' objects (``callback_data``) in one SQLite file.
    The default JSON serializer stores tuples exactly; objects of your own classes would need
    ``serializer="pickle"``."""
    return SQLitePersistence(filepath=path, serializer=serializer)


async def demo(chat: OfflineChat) -> None:
    """A menu, one press, a restart, and the buttons sent before it still carry their tuples."""
    await chat.send("/menu")
    await chat.click("apple +6")
    await chat.restart()
    await chat.click("pear +1")
    await chat.click("apple +1")
    await chat.send("/cart")


STAGE = Stage(
    name="stage5_inline_buttons",
    build_application=build_application,
    make_persistence=make_persistence,
    default_file="stage5.sqlite3",
    file_env="STAGE5_FILE",
    demo=demo,
    file_errors=(DatabaseFileError,),
    serializer_option=True,
    description="Stage 5: inline buttons carrying Python objects (arbitrary callback data) on "
    "SQLitePersistence.",
)


def main() -> int:
    return run_stage(STAGE)


if __name__ == "__main__":
    raise SystemExit(main())
