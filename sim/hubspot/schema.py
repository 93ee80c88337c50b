"""HubSpot's built-in properties per object type, and how values are validated.

Only HubSpot-defined properties exist in a fresh portal; anything else (our
``kleer_id`` and friends) must be created through the properties API first,
exactly as in a real portal. Writing a property that does not exist is a
``PROPERTY_DOESNT_EXIST`` validation error.

The lists follow HubSpot's documentation of default properties. For the newer
objects (commerce subscriptions, projects) the published lists are thinner; the
names here are the ones HubSpot documents, and their values are validated as
plain strings where the allowed options are not published.

Values: HubSpot types ``properties`` as a map of strings. Its API nevertheless
coerces JSON numbers and booleans to their text form (``12`` → ``"12"``), so the
simulator does the same by default and counts each coercion (see
``SimState.non_string_values``); ``strict_value_types`` turns them into
validation errors instead. Objects and arrays are always rejected.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from libs.hubspot.objects import DEFAULT_PROPERTY_GROUPS, ObjectType

# HubSpot property types and the field types it pairs them with.
PROPERTY_TYPES = {"string", "number", "date", "datetime", "enumeration", "bool", "phone_number"}
FIELD_TYPES = {
    "text", "textarea", "number", "date", "select", "radio", "checkbox", "booleancheckbox",
    "calculation_equation", "html", "file", "phonenumber",
}
READ_ONLY_SYSTEM = {"hs_object_id", "hs_lastmodifieddate"}

_DEFAULT_GROUP = DEFAULT_PROPERTY_GROUPS

CURRENCIES = (
    "SEK", "EUR", "USD", "GBP", "NOK", "DKK", "ISK", "CHF", "PLN", "CZK", "HUF", "CAD", "AUD",
    "NZD", "JPY", "CNY", "INR", "BRL", "MXN", "ZAR", "SGD", "HKD",
)
_DEAL_STAGES = (
    "appointmentscheduled", "qualifiedtobuy", "presentationscheduled", "decisionmakerboughtin",
    "contractsent", "closedwon", "closedlost",
)
_BILLING_FREQUENCIES = (
    "weekly", "biweekly", "monthly", "quarterly", "per_six_months", "annually", "per_two_years",
    "per_three_years", "per_four_years", "per_five_years",
)


@dataclass
class PropertyDef:
    """One property definition, shaped like HubSpot's properties API answer."""

    name: str
    label: str
    type: str
    field_type: str
    group_name: str
    has_unique_value: bool = False
    hubspot_defined: bool = False
    read_only: bool = False
    calculated: bool = False
    description: str = ""
    options: list[dict[str, Any]] = field(default_factory=list)
    display_order: int = -1
    created_at: str = ""
    updated_at: str = ""
    _option_values: tuple[list[dict[str, Any]], set[str]] | None = field(
        default=None, init=False, repr=False, compare=False)

    def option_values(self) -> set[str]:
        """The allowed values (worked out again only when ``options`` is replaced, as a PATCH does)."""
        cached = self._option_values
        if cached is None or cached[0] is not self.options:
            cached = self._option_values = (self.options, {str(o.get("value")) for o in self.options})
        return cached[1]

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "label": self.label,
            "type": self.type,
            "fieldType": self.field_type,
            "description": self.description,
            "groupName": self.group_name,
            "options": self.options,
            "displayOrder": self.display_order,
            "calculated": self.calculated,
            "externalOptions": False,
            "hasUniqueValue": self.has_unique_value,
            "hidden": False,
            "hubspotDefined": self.hubspot_defined,
            "modificationMetadata": {
                "archivable": not self.hubspot_defined,
                "readOnlyDefinition": self.hubspot_defined,
                "readOnlyValue": self.read_only,
            },
            "formField": not self.read_only,
            "createdAt": self.created_at,
            "updatedAt": self.updated_at,
            "archived": False,
        }


_KINDS = {
    "s": ("string", "text"),
    "t": ("string", "textarea"),
    "p": ("string", "phonenumber"),
    "n": ("number", "number"),
    "d": ("date", "date"),
    "dt": ("datetime", "date"),
    "e": ("enumeration", "select"),
    "b": ("bool", "booleancheckbox"),
}

# name: kind [, options] [, "ro" for read-only/calculated]
_Spec = tuple[str, str] | tuple[str, str, tuple[str, ...]] | tuple[str, str, tuple[str, ...], str]

_COMMON: list[_Spec] = [
    ("hs_object_id", "n", (), "ro"),
    ("createdate", "dt"),
    ("hs_lastmodifieddate", "dt", (), "ro"),
    ("hubspot_owner_id", "s"),
    ("hs_created_by_user_id", "n", (), "ro"),
    ("hs_updated_by_user_id", "n", (), "ro"),
    ("hs_merged_object_ids", "s", (), "ro"),
]

_BUILT_IN: dict[ObjectType, list[_Spec]] = {
    ObjectType.COMPANIES: [
        ("name", "s"), ("domain", "s"), ("phone", "p"), ("address", "s"), ("address2", "s"),
        ("city", "s"), ("state", "s"), ("zip", "s"), ("country", "s"), ("description", "t"),
        # industry is a ~150-option enumeration in HubSpot; validated as text here.
        ("industry", "s"), ("website", "s"), ("numberofemployees", "n"), ("annualrevenue", "n"),
        ("type", "e", ("PROSPECT", "PARTNER", "RESELLER", "VENDOR", "OTHER")),
        ("lifecyclestage", "e", ("subscriber", "lead", "marketingqualifiedlead", "salesqualifiedlead",
                                 "opportunity", "customer", "evangelist", "other")),
        ("hs_lead_status", "s"), ("founded_year", "s"), ("timezone", "s"), ("about_us", "t"),
        ("is_public", "b"), ("total_revenue", "n"), ("linkedin_company_page", "s"),
        ("facebook_company_page", "s"), ("twitterhandle", "s"), ("hs_parent_company_id", "n"),
        ("closedate", "dt"), ("notes_last_updated", "dt", (), "ro"),
        ("num_associated_contacts", "n", (), "ro"), ("num_associated_deals", "n", (), "ro"),
        ("first_deal_created_date", "dt", (), "ro"), ("recent_deal_amount", "n", (), "ro"),
    ],
    ObjectType.DEALS: [
        ("dealname", "s"), ("amount", "n"), ("dealstage", "e", _DEAL_STAGES),
        ("pipeline", "e", ("default",)), ("closedate", "dt"), ("deal_currency_code", "e", CURRENCIES),
        ("dealtype", "e", ("newbusiness", "existingbusiness")), ("description", "t"),
        ("hs_priority", "e", ("low", "medium", "high")), ("hs_next_step", "t"),
        ("closed_lost_reason", "t"), ("closed_won_reason", "t"), ("hs_deal_stage_probability", "n"),
        ("amount_in_home_currency", "n", (), "ro"), ("hs_acv", "n", (), "ro"), ("hs_arr", "n", (), "ro"),
        ("hs_mrr", "n", (), "ro"), ("hs_tcv", "n", (), "ro"), ("hs_is_closed", "b", (), "ro"),
        ("hs_is_closed_won", "b", (), "ro"), ("hs_forecast_amount", "n", (), "ro"),
        ("num_associated_contacts", "n", (), "ro"),
    ],
    ObjectType.PRODUCTS: [
        ("name", "s"), ("description", "t"), ("price", "n"), ("hs_sku", "s"), ("hs_cost_of_goods_sold", "n"),
        ("hs_recurring_billing_period", "s"), ("recurringbillingfrequency", "e", _BILLING_FREQUENCIES),
        ("hs_product_type", "e", ("inventory", "non_inventory", "service")), ("hs_url", "s"),
        ("hs_images", "s"), ("tax", "n"), ("hs_folder_id", "n"),
    ],
    ObjectType.LINE_ITEMS: [
        ("name", "s"), ("quantity", "n"), ("price", "n"), ("amount", "n"), ("hs_product_id", "n"),
        ("hs_sku", "s"), ("description", "t"), ("hs_recurring_billing_period", "s"),
        ("recurringbillingfrequency", "e", _BILLING_FREQUENCIES), ("hs_recurring_billing_start_date", "d"),
        ("hs_recurring_billing_number_of_payments", "n"), ("hs_billing_start_delay_days", "n"),
        ("hs_billing_start_delay_months", "n"), ("discount", "n"), ("hs_discount_percentage", "n"),
        ("hs_line_item_currency_code", "e", CURRENCIES), ("hs_cost_of_goods_sold", "n"), ("tax", "n"),
        ("hs_tax_rate", "n"), ("hs_position_on_quote", "n"), ("hs_term_in_months", "n", (), "ro"),
        ("hs_acv", "n", (), "ro"), ("hs_arr", "n", (), "ro"), ("hs_mrr", "n", (), "ro"),
        ("hs_tcv", "n", (), "ro"), ("hs_total_discount", "n", (), "ro"),
    ],
    ObjectType.INVOICES: [
        ("hs_currency", "e", CURRENCIES), ("hs_invoice_date", "d"), ("hs_due_date", "d"),
        ("hs_number", "s"), ("hs_title", "s"), ("hs_amount_billed", "n"), ("hs_balance_due", "n"),
        ("hs_amount_paid", "n"), ("hs_subtotal", "n"), ("hs_tax", "n"), ("hs_discount_amount", "n"),
        ("hs_invoice_status", "e", ("draft", "open", "paid", "voided")), ("hs_payment_date", "d"),
        ("hs_purchase_order_number", "s"), ("hs_comments", "t"), ("hs_invoice_link", "s"),
        ("hs_external_invoice_id", "s"), ("hs_external_recipient", "s"), ("hs_invoice_source", "s"),
    ],
    ObjectType.SUBSCRIPTIONS: [
        ("hs_name", "s"), ("hs_status", "s"), ("hs_currency_code", "e", CURRENCIES),
        ("hs_recurring_billing_start_date", "d"), ("hs_recurring_billing_end_date", "d"),
        ("hs_recurring_billing_period", "s"), ("hs_recurring_billing_frequency", "s"),
        ("hs_next_payment_due_date", "d"), ("hs_last_payment_date", "d"), ("hs_last_payment_amount", "n"),
        ("hs_subscription_start_date", "d"), ("hs_subscription_end_date", "d"), ("hs_description", "t"),
        ("hs_mrr", "n"), ("hs_arr", "n"), ("hs_tcv", "n"), ("hs_acv", "n"),
    ],
    ObjectType.PROJECTS: [
        ("hs_name", "s"), ("hs_description", "t"), ("hs_start_date", "d"), ("hs_target_due_date", "d"),
        ("hs_completed_date", "d"), ("hs_status", "s"), ("hs_pipeline", "s"), ("hs_pipeline_stage", "s"),
        ("hs_priority", "s"), ("hs_project_type", "s"), ("hs_budget", "n"),
    ],
}


def default_group(object_type: ObjectType) -> str:
    return _DEFAULT_GROUP[object_type]


def built_in_properties(object_type: ObjectType, now_iso: str) -> dict[str, PropertyDef]:
    """A fresh copy of HubSpot's default properties for ``object_type``."""
    found: dict[str, PropertyDef] = {}
    for order, spec in enumerate(_COMMON + _BUILT_IN[object_type]):
        name, kind = spec[0], spec[1]
        options: tuple[str, ...] = spec[2] if len(spec) > 2 else ()
        read_only = len(spec) > 3
        prop_type, field_type = _KINDS[kind]
        found[name] = PropertyDef(
            name=name,
            label=name.replace("hs_", "").replace("_", " ").capitalize(),
            type=prop_type,
            field_type=field_type,
            group_name=_DEFAULT_GROUP[object_type],
            hubspot_defined=True,
            read_only=read_only,
            calculated=read_only and name not in READ_ONLY_SYSTEM,
            options=[
                {"label": o, "value": o, "displayOrder": i, "hidden": False} for i, o in enumerate(options)
            ],
            display_order=order,
            created_at=now_iso,
            updated_at=now_iso,
        )
    return found


def default_groups(object_type: ObjectType) -> dict[str, dict[str, Any]]:
    name = _DEFAULT_GROUP[object_type]
    label = name.replace("information", " information").capitalize()
    return {name: {"name": name, "label": label, "displayOrder": 0, "archived": False}}


# --- value validation ----------------------------------------------------------

@dataclass(frozen=True)
class ValueProblem:
    """One invalid value, shaped like an entry of HubSpot's "Property values were not valid" list."""

    name: str
    error: str
    message: str

    def to_json(self) -> dict[str, Any]:
        return {"isValid": False, "message": self.message, "error": self.error, "name": self.name}


_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def check_value(prop: PropertyDef, value: str) -> ValueProblem | None:
    """None if HubSpot would accept ``value`` for ``prop``; an empty string always clears."""
    if value == "":
        return None
    # What the pattern ^\s|\s$ finds, without a regex search per value (5 % of the simulator's batch upserts).
    if prop.type != "string" and (value[0].isspace() or value[-1].isspace()):
        return ValueProblem(
            prop.name, "LEADING_TRAILING_WHITESPACE", f'"{value}" includes leading or trailing whitespace.'
        )
    if prop.type == "number":
        try:
            number = Decimal(value)
        except InvalidOperation:
            return ValueProblem(prop.name, "INVALID_DOUBLE", f"{value} was not a valid number.")
        if not number.is_finite():
            return ValueProblem(prop.name, "INVALID_DOUBLE", f"{value} was not a valid number.")
    elif prop.type == "enumeration":
        allowed = prop.option_values()
        if value not in allowed:
            shown = ", ".join(sorted(allowed)[:20])
            return ValueProblem(
                prop.name, "INVALID_OPTION", f'{value} was not one of the allowed options: [{shown}]'
            )
    elif prop.type == "bool":
        if value not in ("true", "false"):
            return ValueProblem(prop.name, "INVALID_BOOLEAN", f"{value} was not a valid boolean.")
    elif prop.type == "date":
        return _check_date(prop.name, value)
    elif prop.type == "datetime":
        return _check_datetime(prop.name, value)
    return None


def _check_date(name: str, value: str) -> ValueProblem | None:
    if _DATE_RE.match(value):
        try:  # what strptime(value, "%Y-%m-%d") accepts, without its cost (15 % of a batch upsert's)
            if len(value) != 10 or not value.isascii():  # "$" matches before a final newline, \d other digits
                raise ValueError(value)
            date(int(value[:4]), int(value[5:7]), int(value[8:]))
        except ValueError:
            return ValueProblem(name, "INVALID_DATE", f"{value} was not a valid date.")
        return None
    if value.isdigit():
        if int(value) % 86_400_000:
            moment = datetime.fromtimestamp(int(value) / 1000, UTC)
            return ValueProblem(
                name, "INVALID_DATE", f"{value} is at {moment:%H:%M:%S}.{moment.microsecond // 1000} UTC, "
                "not midnight!"
            )
        return None
    return ValueProblem(name, "INVALID_DATE", f"{value} was not a valid date (YYYY-MM-DD or epoch ms).")


def _check_datetime(name: str, value: str) -> ValueProblem | None:
    if value.isdigit():
        return None
    text = value[:-1] + "+00:00" if value.endswith("Z") else value
    try:
        datetime.fromisoformat(text)
    except ValueError:
        return ValueProblem(name, "INVALID_DATETIME", f"{value} was not a valid datetime.")
    return None


def to_epoch_ms(prop_type: str, value: str) -> int | None:
    """Epoch ms of a date/datetime value (for search comparisons), or None."""
    if not value:
        return None
    if value.isdigit():
        return int(value)
    text = value[:-1] + "+00:00" if value.endswith("Z") else value
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,99}$")


def check_property_name(name: object) -> str | None:
    """An error message if ``name`` is not a valid internal property name."""
    if not isinstance(name, str) or not _NAME_RE.match(name):
        return (
            f"Property name {name!r} is invalid: use lowercase letters, digits and underscores, "
            "starting with a letter."
        )
    return None
