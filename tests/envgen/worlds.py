"""A small hand-written world used by envgen tests (and variants of it broken on purpose)."""

from __future__ import annotations

import copy

from envgen import world as W


def shop_doc() -> dict:
    """A tiny retail world as a JSON document (without id)."""
    return {
        "format": W.FORMAT,
        "scenario": {"name": "Tiny Shop", "description": "A small online shop.", "category": "retail"},
        "schema": [
            "CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, email TEXT NOT NULL)",
            "CREATE TABLE products (id INTEGER PRIMARY KEY, title TEXT NOT NULL, price REAL NOT NULL CHECK (price >= 0), stock INTEGER NOT NULL CHECK (stock >= 0))",
            "CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER NOT NULL REFERENCES customers(id), product_id INTEGER NOT NULL REFERENCES products(id), quantity INTEGER NOT NULL, status TEXT NOT NULL DEFAULT 'placed')",
        ],
        "seed": {
            "customers": {"columns": ["id", "name", "email"], "rows": [[1, "Ada", "ada@example.com"], [2, "Bob", "bob@example.com"]]},
            "products": {"columns": ["id", "title", "price", "stock"], "rows": [[1, "Lamp", 20.0, 5], [2, "Desk", 150.0, 1], [3, "Chair", 45.5, 0]]},
            "orders": {"columns": ["id", "customer_id", "product_id", "quantity", "status"], "rows": [[1, 2, 1, 1, "shipped"]]},
        },
        "tools": [
            {
                "name": "find_product",
                "description": "Find products whose title contains the query.",
                "parameters": {"type": "object", "properties": {"query": {"type": "string", "minLength": 1}}, "required": ["query"], "additionalProperties": False},
                "impl": {"kind": "sql", "steps": [{"op": "read", "sql": "SELECT id, title, price, stock FROM products WHERE title LIKE '%' || :query || '%' ORDER BY id", "output": "products", "shape": "rows"}]},
            },
            {
                "name": "place_order",
                "description": "Order a quantity of a product for the signed-in customer (id 1).",
                "parameters": {"type": "object", "properties": {"product_id": {"type": "integer", "minimum": 1}, "quantity": {"type": "integer", "minimum": 1, "maximum": 10}}, "required": ["product_id", "quantity"], "additionalProperties": False},
                "impl": {"kind": "sql", "steps": [
                    {"op": "guard", "sql": "SELECT 1 FROM products WHERE id = :product_id", "expect": "exists", "error": "no product with id {product_id}"},
                    {"op": "guard", "sql": "SELECT stock >= :quantity FROM products WHERE id = :product_id", "expect": "true", "error": "not enough stock for product {product_id}"},
                    {"op": "write", "sql": "INSERT INTO orders (customer_id, product_id, quantity) VALUES (1, :product_id, :quantity)", "save": "order_id"},
                    {"op": "write", "sql": "UPDATE products SET stock = stock - :quantity WHERE id = :product_id"},
                ]},
            },
        ],
        "tasks": [
            {
                "id": "buy-lamps",
                "instruction": "Buy two lamps.",
                "check": {"kind": "sql", "assertions": [
                    {"sql": "SELECT COUNT(*) FROM orders WHERE customer_id = 1 AND product_id = 1 AND quantity = 2", "op": "==", "value": 1},
                    {"sql": "SELECT stock FROM products WHERE id = 1", "op": "==", "value": 3},
                ], "changes": {"tables": {"orders": {"ops": ["insert"]}, "products": {"ops": ["update"], "pks": [1], "columns": ["stock"]}}}},
                "gold": [{"tool": "find_product", "arguments": {"query": "Lamp"}}, {"tool": "place_order", "arguments": {"product_id": 1, "quantity": 2}}],
            },
            {
                "id": "desk-price",
                "instruction": "How much does the desk cost?",
                "check": {"kind": "sql", "answer": {"contains": ["150"]}, "changes": {"tables": {}}},
                "gold": [{"tool": "find_product", "arguments": {"query": "Desk"}}],
                "answer": "The desk costs 150.",
            },
        ],
    }


def shop_world() -> W.World:
    return W.from_dict(shop_doc())


def variant(mutate) -> dict:
    """A deep copy of the shop document changed by `mutate(doc)`."""
    doc = copy.deepcopy(shop_doc())
    mutate(doc)
    return doc
