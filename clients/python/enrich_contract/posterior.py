"""How likely a catalogue's value is wrong, given the image: the one definition the server's findings and
`enrich-client audit`'s re-estimates use (enrich.v1.Finding documents it).

A catalogue errs with probability `prior`. With p the model's calibrated probability of the supplied label
s and w the probability of writing s by mistake, Bayes' rule gives

    p_wrong = prior w / (prior w + (1 - prior) p).

The server assumes that a wrong value is any other of the n labels alike: w = (1 - p) / (n - 1).
`enrich-client audit` also learns from the whole catalogue how often a wrong value is a label the model
finds confusable with the true one (`enrich_client.audit.findings`). Written with arithmetic only, so the
arguments may be floats or NumPy arrays.
"""

from __future__ import annotations

import math

DEFAULT_ERROR_PRIOR = 0.05  # a catalogue value is wrong this often before anyone looks at the image
FLAG_AT = 0.5  # p_wrong from which a value is more likely wrong than right


def p_wrong(p_supplied, n_labels, prior):
    """The posterior probability that the supplied label is wrong, any other label being as likely a mistake."""
    return p_wrong_given(p_supplied, uniform_mistake(p_supplied, n_labels), prior)


def uniform_mistake(p_supplied, n_labels):
    """w when every label is as likely a mistake: the chance a wrong value is this one, over the image's
    other labels."""
    return (1.0 - p_supplied) / max(n_labels - 1, 1)  # one label: never a mistake (1 - p is 0)


def p_wrong_given(p_supplied, mistake, prior):
    """The posterior probability that the supplied label is wrong, given w (`mistake`)."""
    wrong = prior * mistake
    right = (1.0 - prior) * p_supplied
    # Both 0 (a label with no probability at all, not even as this mistake): wrong. Written without numpy, for
    # floats and arrays alike.
    nothing = (wrong + right) == 0
    return (wrong + nothing) / (wrong + right + nothing)


def any_wrong(p_wrongs) -> float:
    """The probability that at least one of several independent values is wrong (a name's mentions)."""
    return 1.0 - math.prod(1.0 - value for value in p_wrongs)


def valid_prior(value: float) -> float:
    """The prior a request asked for (0: the default); raises ValueError outside (0, 1)."""
    if value == 0:
        return DEFAULT_ERROR_PRIOR
    if not 0.0 < value < 1.0:
        raise ValueError(f"error_prior {value:g} is not a probability strictly between 0 and 1")
    return value
