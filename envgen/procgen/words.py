"""Word lists for realistic-looking seed values: people, places, notes, dates.

Everything here is constant data plus small pure helpers that draw from a given
`random.Random`, so generation stays deterministic.
"""

from __future__ import annotations

import datetime as _dt
import random

FIRST = (
    "Ada", "Ben", "Carla", "Dev", "Elena", "Farid", "Grace", "Hugo", "Ines", "Jonas", "Kira", "Liam",
    "Maya", "Nikhil", "Olga", "Pavel", "Quinn", "Rosa", "Samir", "Tara", "Umar", "Vera", "Wes", "Xin",
    "Yara", "Zane", "Aisha", "Bruno", "Chloe", "Diego", "Emeka", "Fatima", "Gustav", "Hana", "Ivan",
    "Jada", "Kenji", "Leila", "Marco", "Nora", "Omar", "Priya", "Ravi", "Sofia", "Tomas", "Ursula",
)
LAST = (
    "Okafor", "Lindqvist", "Moreau", "Patel", "Nakamura", "Garcia", "Kowalski", "Haddad", "Schmidt",
    "Rossi", "O'Brien", "Novak", "Fernandes", "Kim", "Mensah", "Ivanova", "Dubois", "Castillo", "Tanaka",
    "Berg", "Walsh", "Abebe", "Silva", "Horvat", "Larsen", "Chen", "Mbeki", "Quinto", "Reyes", "Sato",
    "Varga", "Young", "Zimmer", "Ahmed", "Brooks", "Costa", "Dahl", "Ekwueme", "Fischer", "Gupta",
)
CITIES = (
    "Lisbon", "Denver", "Osaka", "Nairobi", "Leeds", "Porto", "Austin", "Lyon", "Krakow", "Tacoma",
    "Halifax", "Adelaide", "Bergen", "Cusco", "Durban", "Eindhoven", "Fresno", "Ghent", "Hanoi", "Izmir",
)
STREETS = ("Maple", "Harbor", "Cedar", "Mill", "Station", "Orchard", "Bridge", "Hill", "Lake", "Park", "Elm", "Quarry")
STREET_KINDS = ("St", "Ave", "Rd", "Lane", "Way", "Blvd")
DOMAINS = ("example.com", "mail.test", "inbox.example", "post.example.org", "webmail.test")
PLACE_WORDS = (
    "Northwind", "Bluebird", "Summit", "Harbor", "Evergreen", "Maple", "Silverline", "Copper", "Lakeside",
    "Redwood", "Brightside", "Cobalt", "Juniper", "Granite", "Meridian", "Willow", "Aurora", "Pioneer",
    "Riverbend", "Starling", "Oakridge", "Tidewater", "Sunrise", "Ironwood", "Halcyon", "Keystone",
)
NOTE_TEXTS = (
    "Please call before arriving.", "Running about ten minutes late.", "Need a receipt for expenses.",
    "Leave it with the front desk.", "Prefer the morning if possible.", "Accessibility access required.",
    "Thanks for the quick help!", "Please double-check the spelling of my name.", "Can this be expedited?",
    "Will confirm the details by email.", "Second request, see earlier message.", "Gift - no prices please.",
)
REVIEW_TEXTS = (
    "Exactly as described.", "Good value overall.", "Would recommend to a friend.", "Not what I expected.",
    "Excellent quality.", "Decent, but a bit pricey.", "Fast and friendly.", "Could be better.",
    "Absolutely loved it.", "Average experience.", "Five stars, no complaints.", "Arrived late but fine.",
)
NOTIFY_TEXTS = (
    "Your {noun} was updated", "Reminder about your upcoming {noun}", "New message about your {noun}",
    "Your {noun} needs attention", "Weekly summary is ready", "Policy update", "Security notice",
    "Your receipt is available", "Survey: tell us how we did", "Account verification complete",
)
TAG_WORDS = (
    "popular", "new", "featured", "eco", "limited", "clearance", "premium", "family", "bestseller",
    "seasonal", "local", "accessible", "express", "budget",
)
ADDRESS_LABELS = ("home", "work", "billing", "shipping", "cabin", "parents", "studio", "office")
ROLES = ("manager", "specialist", "coordinator", "assistant", "lead", "agent", "supervisor")


def person(rng: random.Random, taken: set[str]) -> str:
    """A full name not yet in `taken` (added to it)."""
    while True:
        name = f"{rng.choice(FIRST)} {rng.choice(LAST)}"
        if name not in taken:
            taken.add(name)
            return name


def email(name: str, rng: random.Random) -> str:
    """An email address derived from a full name."""
    first, last = name.lower().replace("'", "").split(" ", 1)
    return f"{first}.{last.replace(' ', '')}@{rng.choice(DOMAINS)}"


def phone(rng: random.Random) -> str:
    """A fictional phone number (555 prefix)."""
    return f"555-{rng.randrange(100, 1000):03d}-{rng.randrange(1000, 10000):04d}"


def street(rng: random.Random) -> str:
    """A street address line."""
    return f"{rng.randrange(1, 999)} {rng.choice(STREETS)} {rng.choice(STREET_KINDS)}"


def money(rng: random.Random, lo: int, hi: int) -> float:
    """An amount with whole cents in [lo, hi], often ending in .00, .50 or .99."""
    whole = rng.randrange(lo, hi + 1)
    cents = rng.choice((0, 0, 50, 99, 25, rng.randrange(100)))
    return round(whole + cents / 100, 2)


def day(base: _dt.date, rng: random.Random, lo: int, hi: int) -> str:
    """An ISO date between base+lo and base+hi days."""
    return (base + _dt.timedelta(days=rng.randrange(lo, hi + 1))).isoformat()


def stamp(base: _dt.date, rng: random.Random, lo: int, hi: int) -> str:
    """An ISO timestamp between base+lo and base+hi days."""
    d = base + _dt.timedelta(days=rng.randrange(lo, hi + 1))
    return f"{d.isoformat()}T{rng.randrange(7, 21):02d}:{rng.choice((0, 15, 30, 45)):02d}:00"


def fmt_num(v: float | int) -> str:
    """A number as people write it: no trailing zeros (20, 19.9, 19.99)."""
    if float(v).is_integer():
        return str(int(v))
    return f"{v:.2f}".rstrip("0").rstrip(".")
