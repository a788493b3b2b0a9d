"""Adapters for other libraries. Each is an optional dependency, imported only on demand:

* ``memollm.integrations.langchain``: ``MemollmCache``, a LangChain LLM cache
  (``pip install 'memollm[langchain]'``).
"""
