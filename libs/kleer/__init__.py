"""The async Kleer API client (``KleerClient``), its typed errors and the resources it speaks to."""

from libs.kleer.client import DEFAULT_BASE_URL, KleerClient, ResourceAPI
from libs.kleer.errors import (
    KleerAuthError,
    KleerError,
    KleerNotFound,
    KleerUnavailable,
    KleerValidationError,
)
from libs.kleer.resources import AGREEMENT, CLIENT, INVOICE, PRODUCT, PROJECT, RESOURCES, Resource
from libs.kleer.retry import RetryPolicy

__all__ = [
    "AGREEMENT",
    "CLIENT",
    "DEFAULT_BASE_URL",
    "INVOICE",
    "PRODUCT",
    "PROJECT",
    "RESOURCES",
    "KleerAuthError",
    "KleerClient",
    "KleerError",
    "KleerNotFound",
    "KleerUnavailable",
    "KleerValidationError",
    "Resource",
    "ResourceAPI",
    "RetryPolicy",
]
