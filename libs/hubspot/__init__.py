"""HubSpot: the async API client, its rate budget, typed errors and request signatures.

Import what you need from the submodules, or the common names from here:
``HubSpotClient``, ``RecordInput``, ``BatchResult``, ``PropertySpec``, ``AssociationInput``,
``ObjectType``, ``PostgresRateBudget``, ``SlidingWindowBudget``, ``verify_request``.
"""

from libs.hubspot.auth import OAuthCredentials
from libs.hubspot.client import HubSpotClient
from libs.hubspot.errors import (
    HubSpotAuthError,
    HubSpotConflict,
    HubSpotError,
    HubSpotNotFound,
    HubSpotRateLimited,
    HubSpotRequestError,
    HubSpotUnavailable,
    HubSpotValidationError,
)
from libs.hubspot.models import (
    Association,
    AssociationInput,
    AssociationResult,
    BatchResult,
    EnsureReport,
    HubSpotRecord,
    InputFailed,
    InputSucceeded,
    PropertyGroupSpec,
    PropertyInfo,
    PropertySpec,
    RecordInput,
)
from libs.hubspot.objects import OBJECTS, ObjectType, association_type_id
from libs.hubspot.rate_budget import PostgresRateBudget, RateBudget, SlidingWindowBudget, UnlimitedBudget
from libs.hubspot.signatures import SignatureError, SignatureFailure, verify_request

__all__ = [
    "OBJECTS",
    "Association",
    "AssociationInput",
    "AssociationResult",
    "BatchResult",
    "EnsureReport",
    "HubSpotAuthError",
    "HubSpotClient",
    "HubSpotConflict",
    "HubSpotError",
    "HubSpotNotFound",
    "HubSpotRateLimited",
    "HubSpotRecord",
    "HubSpotRequestError",
    "HubSpotUnavailable",
    "HubSpotValidationError",
    "InputFailed",
    "InputSucceeded",
    "OAuthCredentials",
    "ObjectType",
    "PostgresRateBudget",
    "PropertyGroupSpec",
    "PropertyInfo",
    "PropertySpec",
    "RateBudget",
    "RecordInput",
    "SignatureError",
    "SignatureFailure",
    "SlidingWindowBudget",
    "UnlimitedBudget",
    "association_type_id",
    "verify_request",
]
