import os

import pytest


@pytest.fixture(scope="session", autouse=True)
def scarce_home(tmp_path_factory):
    """One cache (tokenizers, token stores) for the whole session, never the user's ~/.cache/scarce."""
    home = tmp_path_factory.mktemp("scarce_home")
    previous = os.environ.get("SCARCE_HOME")
    os.environ["SCARCE_HOME"] = str(home)
    yield home
    if previous is None:
        os.environ.pop("SCARCE_HOME", None)
    else:
        os.environ["SCARCE_HOME"] = previous
