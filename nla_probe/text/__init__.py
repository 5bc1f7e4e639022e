"""What an explanation is made of: delimiter families and the span parser.

Holds :mod:`~nla_probe.text.delimiters` (named families of delimiter characters: quotes, brackets,
...) and :mod:`~nla_probe.text.spans` (the parser that finds delimited spans, their nesting and
sentence bounds).  Pure text processing on ``str``: no model, no numpy.

May import: the core modules only.
"""
