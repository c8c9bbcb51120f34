"""The client tests' image fixtures, for uploads in the browser too."""

from tests.client.conftest import mnist_test  # noqa: F401
