"""The demo catalog that `prost seed` loads: six categories, thirty-six products.

Plain data, so that the shop looks like one (names, descriptions, prices and stock a
reader recognises) and so that tests can count on it: every SKU and slug is unique,
prices are decimal strings with two places, stock is in units on hand.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class DemoCategory:
    slug: str
    name: str


@dataclass(frozen=True, slots=True)
class DemoProduct:
    sku: str
    name: str
    description: str
    price: str
    stock: int
    category: str  # a DemoCategory slug


CATEGORIES: tuple[DemoCategory, ...] = (
    DemoCategory("coffee-tea", "Coffee & Tea"),
    DemoCategory("kitchen", "Kitchen"),
    DemoCategory("books", "Books"),
    DemoCategory("outdoor", "Outdoor"),
    DemoCategory("audio", "Audio"),
    DemoCategory("stationery", "Stationery"),
)

# One product a line: a table reads better than the formatter's layout.
# fmt: off
PRODUCTS: tuple[DemoProduct, ...] = (
    # coffee & tea
    DemoProduct("COF-ETH-250", "Ethiopia Yirgacheffe, 250 g", "Washed heirloom beans, light roast: jasmine, bergamot and lemon.", "14.50", 120, "coffee-tea"),
    DemoProduct("COF-COL-1000", "Colombia Huila, 1 kg", "Medium roast for espresso and filter: caramel, red apple, cocoa.", "39.00", 60, "coffee-tea"),
    DemoProduct("COF-DEC-250", "Swiss Water Decaf, 250 g", "Decaffeinated without solvents; chocolate and hazelnut.", "13.00", 80, "coffee-tea"),
    DemoProduct("TEA-SEN-100", "Japanese Sencha, 100 g", "First-flush steamed green tea from Shizuoka.", "11.90", 90, "coffee-tea"),
    DemoProduct("TEA-ASS-250", "Assam Breakfast, 250 g", "Malty, full-bodied black tea that takes milk well.", "9.50", 150, "coffee-tea"),
    DemoProduct("TEA-CHA-50", "Ceremonial Matcha, 50 g", "Stone-ground tencha from Uji, for whisking.", "24.00", 40, "coffee-tea"),
    # kitchen
    DemoProduct("KIT-POUR-02", "Pour-over Dripper, ceramic", "Size 02 cone with spiral ribs for an even extraction.", "22.00", 70, "kitchen"),
    DemoProduct("KIT-KETL-GN", "Gooseneck Kettle, 1 l", "Stainless steel, built-in thermometer, for a slow, precise pour.", "49.90", 35, "kitchen"),
    DemoProduct("KIT-GRND-HD", "Hand Grinder, conical burr", "Steel burrs, 40 clicks from espresso to French press.", "89.00", 25, "kitchen"),
    DemoProduct("KIT-SCAL-01", "Coffee Scale with Timer", "0.1 g resolution, auto-tare, USB-C rechargeable.", "34.50", 50, "kitchen"),
    DemoProduct("KIT-CAST-26", "Cast-iron Skillet, 26 cm", "Pre-seasoned, oven safe, for a lifetime of steaks and cornbread.", "42.00", 30, "kitchen"),
    DemoProduct("KIT-KNIF-CH", "Chef's Knife, 20 cm", "Forged carbon steel with a walnut handle.", "119.00", 15, "kitchen"),
    # books
    DemoProduct("BOK-DDIA-01", "Designing Data-Intensive Applications", "Reliable, scalable and maintainable systems, from storage engines to stream processing.", "45.00", 40, "books"),
    DemoProduct("BOK-EIP-01", "Enterprise Integration Patterns", "The pattern language of messaging: channels, routers, translators and endpoints.", "59.99", 20, "books"),
    DemoProduct("BOK-DDD-01", "Domain-Driven Design", "Tackling complexity in the heart of software.", "54.00", 25, "books"),
    DemoProduct("BOK-REL-01", "Release It!", "Design and deploy production-ready software: timeouts, circuit breakers, bulkheads.", "41.50", 30, "books"),
    DemoProduct("BOK-SRE-01", "Site Reliability Engineering", "How a large operator runs production systems.", "39.00", 35, "books"),
    DemoProduct("BOK-PYC-01", "Python Concurrency in Practice", "Threads, processes and asyncio, and when each one fits.", "36.00", 45, "books"),
    # outdoor
    DemoProduct("OUT-TENT-2P", "Two-person Backpacking Tent", "1.4 kg freestanding tent with two doors and vestibules.", "289.00", 12, "outdoor"),
    DemoProduct("OUT-BAG-M5", "Down Sleeping Bag, -5 °C", "650-fill responsibly sourced down, 900 g.", "229.00", 18, "outdoor"),
    DemoProduct("OUT-STOV-TI", "Titanium Camp Stove", "Canister stove, 45 g, boils a litre in three and a half minutes.", "54.00", 40, "outdoor"),
    DemoProduct("OUT-BOTL-1L", "Insulated Bottle, 1 l", "Keeps drinks cold for 24 hours, hot for 12.", "32.00", 100, "outdoor"),
    DemoProduct("OUT-LAMP-400", "Headlamp, 400 lm", "Rechargeable, red night mode, IPX4.", "39.90", 60, "outdoor"),
    DemoProduct("OUT-PACK-38", "Daypack, 38 l", "Ventilated back panel, hip belt, rain cover included.", "119.00", 22, "outdoor"),
    # audio
    DemoProduct("AUD-HP-ANC", "Wireless Noise-cancelling Headphones", "Over-ear, 30 hours of battery, multipoint Bluetooth.", "249.00", 25, "audio"),
    DemoProduct("AUD-EB-PRO", "True Wireless Earbuds", "IPX5, wireless charging case, 8 + 24 hours of playback.", "129.00", 50, "audio"),
    DemoProduct("AUD-SPK-BT", "Portable Bluetooth Speaker", "Waterproof, 12 hours, pairs with a second one for stereo.", "79.00", 45, "audio"),
    DemoProduct("AUD-TT-01", "Belt-drive Turntable", "Two speeds, built-in phono preamp, carbon tonearm.", "349.00", 8, "audio"),
    DemoProduct("AUD-DAC-01", "USB DAC and Headphone Amp", "32-bit/384 kHz, drives 300-ohm headphones.", "149.00", 20, "audio"),
    DemoProduct("AUD-CBL-3M", "Braided Audio Cable, 3 m", "3.5 mm to 3.5 mm, gold-plated, oxygen-free copper.", "12.00", 200, "audio"),
    # stationery
    DemoProduct("STA-NB-A5D", "Dotted Notebook, A5", "192 numbered pages of 100 g/m² paper that fountain pens love.", "18.50", 140, "stationery"),
    DemoProduct("STA-FP-M", "Fountain Pen, medium nib", "Steel nib, piston filler, demonstrator body.", "65.00", 30, "stationery"),
    DemoProduct("STA-INK-BL", "Bottled Ink, blue-black, 50 ml", "Water-resistant iron-gall-free ink.", "14.00", 80, "stationery"),
    DemoProduct("STA-PEN-GEL", "Gel Pens, pack of 10", "0.5 mm, quick-drying, ten colours.", "9.90", 180, "stationery"),
    DemoProduct("STA-PLN-26", "Weekly Planner 2026", "Linen cover, week on two pages, ribbon marker.", "24.00", 75, "stationery"),
    DemoProduct("STA-DESK-MAT", "Felt Desk Mat, 80 × 30 cm", "Merino wool felt with a non-slip cork base.", "39.00", 40, "stationery"),
)
# fmt: on
