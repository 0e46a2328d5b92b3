"""Adversarial input strategies shared by the fuzz tests."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from worker.payout import FIELDS

#: lone surrogates (valid in a Python str, not encodable as UTF-8), controls, odd spaces
ODD_CHARS = st.one_of(
    st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF),
    st.sampled_from(
        [
            "\x00",
            "\x1f",
            "\x7f",
            "\x85",
            "\u2028",
            "\u200b",
            "\ufeff",
            "\uff03",
            "\u0130",
            "\U0001f4b8",
            "%",
            "&",
            "=",
            "\\",
            "'",
            '"',
            "\n",
            " ",
        ]
    ),
)
#: text around one odd character (Hypothesis rarely draws surrogates inside st.text)
ODD_TEXT = st.builds(
    lambda a, c, b: a + c + b,
    st.text("abcXYZ09", max_size=6),
    ODD_CHARS,
    st.text("abcXYZ09", max_size=6),
)
#: any unicode text, with the odd characters mixed in
TEXT = st.one_of(st.text(st.one_of(st.characters(), ODD_CHARS), max_size=40), ODD_TEXT)
#: long strings without paying for drawing each character
HUGE = st.builds(lambda s, n: s * n, st.text(min_size=1, max_size=3), st.integers(17, 100_000))
NUMBERS = st.one_of(
    st.integers(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, -1, 1, 9_999_999_999, 10_000_000_000, 2**63, -(2**63)]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([float("nan"), float("inf"), -float("inf"), 5000.0, 5e6, 1e308, -0.0]),
)
SCALARS = st.one_of(st.none(), st.booleans(), NUMBERS, TEXT, HUGE, st.binary(max_size=20))
NESTED = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.tuples(inner), st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)

#: values that are valid or nearly so, per field, so that validation is passed often
PLAUSIBLE: dict[str, st.SearchStrategy[Any]] = {
    "payout_cl_id": st.one_of(
        st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,31}", fullmatch=True),
        st.sampled_from(["", "x" * 33, "a b", "-lead", "ORD\n1", "ORD\u0661", "ÄBC"]),
    ),
    "amount": st.one_of(st.integers(1, 9_999_999_999), st.sampled_from([5_000_000, 0, -5])),
    "bank_name": st.one_of(
        st.sampled_from(["BCA", "BNI", "BANK MANDIRI", "B&B", "bca", " BCA", "BCA ", "X" * 17]),
        st.from_regex(r"[A-Za-z0-9 _.&-]{1,16}", fullmatch=True),
    ),
    "name": st.one_of(st.text(min_size=1, max_size=16), st.sampled_from(["Siti", "王小头", " x"])),
    "number": st.one_of(
        st.from_regex(r"[0-9]{1,32}", fullmatch=True), st.sampled_from(["", "1" * 33, "١٢٣", "12 34", "-1"])
    ),
    "notify_url": st.one_of(
        st.none(),
        st.sampled_from(
            [
                "http://127.0.0.1:8080/notify",
                "https://merchant.example/cb",
                "ftp://x/y",
                "http://",
                "http://[::1",
                "http://[::1]:80/x",
                "http://a b/",
                "https://\uff03x/",
                "http://example.com:99999/",
                "http://user:pw@host/",
                "//host/x",
                "http://\x00/",
                "http://" + "a" * 300,
            ]
        ),
        st.builds(lambda h, p: f"http://{h}/{p}", TEXT, TEXT),
    ),
}

ANY_VALUE = st.one_of(SCALARS, NESTED)


def field_value(name: str) -> st.SearchStrategy[Any]:
    return st.one_of(PLAUSIBLE[name], ANY_VALUE)


VALID: dict[str, Any] = {
    "payout_cl_id": "ORD-1",
    "amount": 5_000_000,
    "bank_name": "BCA",
    "name": "Siti Rahma",
    "number": "8800112233",
    "notify_url": "http://127.0.0.1:8080/payouts/notify",
}


@st.composite
def payout_data(draw: st.DrawFn, *, extra: bool = True) -> dict[str, Any]:
    """A payout dict: each field plausible, adversarial or missing; maybe extra fields.

    Half the examples start from a valid payout and break one or two fields, so the
    code after validation (the store, the queue) is reached with near-valid data.
    """
    data: dict[str, Any] = {}
    if draw(st.booleans()):
        data = dict(VALID)
        for name in draw(st.lists(st.sampled_from(FIELDS), min_size=1, max_size=2, unique=True)):
            if draw(st.integers(0, 5)) == 0:
                del data[name]
            else:
                data[name] = draw(st.one_of(field_value(name), ODD_TEXT))
    else:
        for name in FIELDS:
            if draw(st.integers(0, 9)) == 0:
                continue  # missing
            data[name] = draw(field_value(name))
    if extra and draw(st.integers(0, 4)) == 0:
        data.update(draw(st.dictionaries(st.one_of(TEXT, HUGE), ANY_VALUE, max_size=3)))
    return data
