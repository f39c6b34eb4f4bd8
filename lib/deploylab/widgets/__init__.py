"""ipywidgets explorers the notebooks use: one module per chapter's explorer.

ipywidgets loads only when an explorer is built, so importing deploylab stays fast.
"""
