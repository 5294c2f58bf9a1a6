"""HTTP and MCP layers over ``amem.Memory``: no SQL, prompts or retrieval logic of their own.

Imported lazily by the CLI (``amem serve``, ``amem mcp``), because FastAPI, uvicorn and the MCP SDK are
the ``server`` extra.
"""
