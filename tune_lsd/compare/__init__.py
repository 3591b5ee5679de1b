"""``tune-lsd compare``: two search spaces, searched and retrained with paired seeds, their
test differences with intervals and a verdict (does LSD help on my data?).

- :mod:`~tune_lsd.compare.settings`: :class:`CompareSettings`, the searches it names.
- :mod:`~tune_lsd.compare.study`: :func:`run_compare`, :func:`resume_compare`.
- :mod:`~tune_lsd.compare.stats`: paired differences, bootstrap and Student-t intervals, the verdict.
- :mod:`~tune_lsd.compare.page`: the forest plot and the HTML page.
"""

from tune_lsd.compare.settings import CompareSettings
from tune_lsd.compare.stats import Difference, paired_differences, verdict
from tune_lsd.compare.study import resume_compare, run_compare

__all__ = ["CompareSettings", "Difference", "paired_differences", "resume_compare", "run_compare", "verdict"]
