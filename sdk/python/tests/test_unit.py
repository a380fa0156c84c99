"""Pure functions, no relay."""

import pytest

from fastpubsub import token_id


def test_token_id_secret_is_opaque():
    assert token_id("AT_01ab_c0ffee") == "01ab"
    assert token_id("AT_01ab_se_cr_et") == "01ab"
    for bad in ["AT_01ab", "AT__x", "AT_01ab_", "XT_1_2"]:
        with pytest.raises(ValueError):
            token_id(bad)
