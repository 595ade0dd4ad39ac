"""medvision-eval: can vision-language models measure in medical images?

Importing this package has no side effects: no logging setup, no plugin discovery,
no global patches. Discovery happens when a :class:`~medvision_eval.plugins.Registry`
is built.
"""

__version__ = "0.1.0"
