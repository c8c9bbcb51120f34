"""The client tests' image fixtures, for the Predict page too."""

from tests.client.conftest import mnist_test  # noqa: F401
