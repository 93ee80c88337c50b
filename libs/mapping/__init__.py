"""Field mappings between Kleer and HubSpot: pure functions over plain data.

The only I/O is reading the mappings file (``load_mappings``). Every function
that needs mappings takes them as the keyword ``mappings``; when omitted the
built-in defaults (``default_mappings.yaml``) apply.

Modules: ``objects`` (object types, HubSpot objects, association ids),
``transforms`` (value conversions), ``loader`` (file format), ``convert``
(``to_hubspot``/``to_kleer``/``fingerprint``), ``triggers``, ``properties``
(custom properties to create), ``amounts`` (row amounts, MRR/ARR),
``line_items``, ``invoices`` (``should_sync_invoice``), ``workflow`` (deal
line items -> Kleer rows).
"""

from libs.mapping.amounts import (
    BILLING_FREQUENCY_MONTHS,
    agreement_arr,
    agreement_mrr,
    billing_frequency_for_months,
    months_for_billing_period,
    row_amount,
)
from libs.mapping.convert import fingerprint, to_hubspot, to_kleer
from libs.mapping.errors import MappingError, MappingsFileError, TransformError
from libs.mapping.invoices import is_credit_invoice, should_sync_invoice
from libs.mapping.line_items import LineItem, line_items_for_agreement, line_items_for_invoice
from libs.mapping.loader import default_mappings, load_mappings, parse_mappings
from libs.mapping.model import (
    Direction,
    FieldMapping,
    Mappings,
    ObjectMapping,
    PropertyDefinition,
    PropertyOption,
)
from libs.mapping.properties import custom_properties
from libs.mapping.seed import TRIGGER_PROPERTIES
from libs.mapping.triggers import (
    hubspot_properties_to_read,
    is_trigger,
    one_way_properties,
    trigger_properties,
)
from libs.mapping.workflow import (
    AgreementDraft,
    AgreementRowDraft,
    agreement_rows_from_line_items,
    billing_interval_months,
    deal_line_item_to_invoice_row,
    line_item_to_agreement_row,
)

__all__ = [
    "BILLING_FREQUENCY_MONTHS",
    "TRIGGER_PROPERTIES",
    "AgreementDraft",
    "AgreementRowDraft",
    "Direction",
    "FieldMapping",
    "LineItem",
    "MappingError",
    "Mappings",
    "MappingsFileError",
    "ObjectMapping",
    "PropertyDefinition",
    "PropertyOption",
    "TransformError",
    "agreement_arr",
    "agreement_mrr",
    "agreement_rows_from_line_items",
    "billing_frequency_for_months",
    "billing_interval_months",
    "custom_properties",
    "deal_line_item_to_invoice_row",
    "default_mappings",
    "fingerprint",
    "hubspot_properties_to_read",
    "is_credit_invoice",
    "is_trigger",
    "line_item_to_agreement_row",
    "line_items_for_agreement",
    "line_items_for_invoice",
    "load_mappings",
    "months_for_billing_period",
    "one_way_properties",
    "parse_mappings",
    "row_amount",
    "should_sync_invoice",
    "to_hubspot",
    "to_kleer",
    "trigger_properties",
]
