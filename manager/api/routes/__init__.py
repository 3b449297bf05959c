"""The read API's routers, one module per resource; each is thin: parse, query, convert."""
