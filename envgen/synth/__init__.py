"""Model-driven world synthesis: the AWM stages over any OpenAI-compatible endpoint (no jax).

`client` the stage-level client (cache, backoff, concurrency, accounting);
`stages` tasks -> schema -> seed -> tool spec -> tools -> checks, each gated and repaired;
`scenarios` the self-instruct scenario stage with dedup; `pipeline` a whole run.
Prompts live in `prompts/<stage>.md`.
"""
