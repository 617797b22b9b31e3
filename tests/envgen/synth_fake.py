"""A scripted model for the synthesis tests: deterministic replies per stage, some malformed on purpose.

`reply(messages)` answers like a model would: it reads the stage from the system
prompt's header and the product from the user turn, and answers with pieces of the
tiny shop world of `tests.envgen.worlds`. Products whose names carry a marker
misbehave:
- "Fenced": every answer wrapped in a code fence with prose before and after;
- "Broken": the first schema has a syntax error; the repair (which must quote the
  gate's error) gets a good one;
- "Truncated": the seed answer stops mid-document (finish_reason "length") after the
  last table, which the JSON repair cuts back to complete rows;
- "Hopeless": tool implementations always name a column that does not exist.
`ScriptedBackend` serves it through the stage-level client interface; `replay_entry`
through the shared replay server (`tests.fakes.replay_server`) over HTTP.
"""

from __future__ import annotations

import json
import re
from typing import Callable

from envgen.synth.client import Completion, EmbeddingsUnavailable, TransientError
from tests.envgen.worlds import shop_doc
from tests.fakes.replay_server import Reply

PRODUCTS = [
    ("Lamp Outlet Fenced", "Sells reading lamps and bulbs to students; keeps customers, products and orders.", "retail"),
    ("Harbor Desk Broken", "Office furniture store for small firms, tracking desks, buyers and their purchases.", "furniture"),
    ("Quilt Corner Truncated", "Handmade quilts sold at weekend markets, with patrons, stock and sales records.", "crafts"),
    ("Bolt Hardware Hopeless", "Hardware depot where contractors buy fasteners; inventory and order ledger.", "hardware"),
    ("Garden Gnome Emporium", "Whimsical garden decor boutique: collectors, figurines and shipments.", "garden"),
    ("Lamp Outlet Fenced Again", "Sells reading lamps and bulbs to students; keeps customers, products and orders.", "retail"),
]


def _stage(messages: list[dict[str, str]]) -> str:
    m = re.match(r"# awmjax synthesis: (\w+)", messages[0]["content"])
    return m.group(1) if m else "?"


def product_of(messages: list[dict[str, str]]) -> str:
    m = re.search(r"^Product: (.+?)(?: \(|$)", messages[1]["content"], re.M)
    return m.group(1) if m else ""


def _is_repair(messages) -> bool:
    return messages[-1]["role"] == "user" and messages[-1]["content"].startswith("# awmjax synthesis: repair")


def answer(messages: list[dict[str, str]]) -> tuple[str, str]:
    """(text, finish_reason) for one request."""
    doc = shop_doc()
    stage, product, repair = _stage(messages), product_of(messages), _is_repair(messages)
    finish = "stop"
    if stage == "scenarios":
        n = int(re.search(r"Write (\d+) new scenarios", messages[1]["content"]).group(1))
        taken = messages[1]["content"]
        fresh = [p for p in PRODUCTS if f"- {p[0]}\n" not in taken + "\n"]
        body = {"scenarios": [{"name": a, "description": b, "category": c} for a, b, c in fresh[:n]]}
    elif stage == "tasks":
        body = {"tasks": [t["instruction"] for t in doc["tasks"]]}
    elif stage == "schema":
        schema = list(doc["schema"])
        if "Broken" in product and not repair:
            schema[2] = schema[2].replace("quantity INTEGER NOT NULL,", "quantity INTEGER NOT NULL,,")
        body = {"schema": schema}
    elif stage == "seed":
        body = {"rows": {t: [dict(zip(s["columns"], r)) for r in s["rows"]] for t, s in doc["seed"].items()}}
        if "Truncated" in product:
            extra = '{"id": 2, "customer_id": 1, "product_id": 2, "quant'
            text = json.dumps(body)[:-3] + ", " + extra
            return text, "length"
    elif stage == "toolspec":
        body = {"tools": [{"name": t["name"], "description": t["description"], "parameters": t["parameters"],
                           "reads": ["products"], "writes": [] if t["name"] == "find_product" else ["orders", "products"]}
                          for t in doc["tools"]]}
    elif stage == "tools":
        tools = [{"name": t["name"], "impl": t["impl"]} for t in doc["tools"]]
        if "Hopeless" in product:
            tools[0]["impl"]["steps"][0]["sql"] = "SELECT id, colour FROM products WHERE title LIKE '%' || :query || '%'"
        body = {"tools": tools}
    elif stage == "checks":
        body = {"tasks": [{"id": f"t{i + 1:02d}", "check": t["check"], "gold": t["gold"], "answer": t.get("answer")}
                          for i, t in enumerate(doc["tasks"])]}
    else:
        return "I do not understand the request.", "stop"
    text = json.dumps(body)
    if "Fenced" in product:
        text = f"Here is the answer you asked for:\n```json\n{json.dumps(body, indent=2)}\n```\nLet me know if you need changes."
    return text, finish


def usage(messages, text) -> tuple[int, int]:
    """Deterministic token counts: words in and out."""
    return sum(len(m["content"].split()) for m in messages), len(text.split())


class ScriptedBackend:
    """The scripted model behind the stage-level `Backend` interface, with optional transient failures."""

    def __init__(self, model: str = "scripted", *, fail_first: int = 0, embeddings: bool = False):
        self.model, self.fail_first, self.embeddings = model, fail_first, embeddings
        self.requests: list[list[dict[str, str]]] = []
        self.embed_requests: list[list[str]] = []

    async def chat(self, messages, params) -> Completion:
        self.requests.append(messages)
        if len(self.requests) <= self.fail_first:
            raise TransientError("HTTP 429 rate limited (scripted)")
        text, finish = answer(messages)
        p, c = usage(messages, text)
        return Completion(text, p, c, finish)

    async def embed(self, texts):
        self.embed_requests.append(list(texts))
        if not self.embeddings:
            raise EmbeddingsUnavailable("scripted model serves no embeddings")
        # a bag of the name's words hashed into 16 dimensions: equal names, equal vectors
        vecs = []
        for t in texts:
            v = [0.0] * 16
            for w in t.split(".")[0].lower().split():
                v[sum(map(ord, w)) % 16] += 1.0
            vecs.append(v)
        return vecs, sum(len(t.split()) for t in texts)

    def stages_asked(self) -> list[str]:
        return [_stage(m) for m in self.requests]


def replay_entry(answered: list[str]) -> Callable[[dict], Reply]:
    """A `ReplayServer` script entry answering as the scripted model; logs each answered request's messages."""

    def entry(request: dict) -> Reply:
        messages = request["messages"]
        text, finish = answer(messages)
        p, c = usage(messages, text)
        answered.append(json.dumps(messages, sort_keys=True))
        return Reply(content=text, finish_reason=finish, usage={"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c})

    return entry
