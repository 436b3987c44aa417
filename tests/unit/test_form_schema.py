"""The Prefect form for the finetune flow, as its parameter schema: what a UI user gets to fill in.

Fast and without a server: the same schema Prefect stores with a deployment (``parameter_schema``), checked
against the config model field by field, and the deployments' parameters validated against it the way
``enforce_parameter_schema`` does.
"""

from __future__ import annotations

import enum
import types
import typing

import pydantic
import pytest
import yaml

from flows.finetune import finetune
from tests.conftest import REPO
from tuneline.config import FinetuneConfig


@pytest.fixture(scope="module")
def schema() -> dict:
    from prefect.utilities.callables import parameter_schema

    return parameter_schema(finetune).model_dump_for_openapi()


def sections(model: type[pydantic.BaseModel], path: str = "config"):
    """(dotted path, model class) of the config and every nested section."""
    yield path, model
    for name, field in model.model_fields.items():
        for inner in typing.get_args(field.annotation) or (field.annotation,):
            if isinstance(inner, type) and issubclass(inner, pydantic.BaseModel):
                yield from sections(inner, f"{path}.{name}")


def referenced(schema: dict, prop: dict) -> dict:
    """The property itself, or the definition its ``$ref`` names."""
    if "$ref" in prop:
        return schema["definitions"][prop["$ref"].rsplit("/", 1)[1]]
    return prop


def test_every_config_field_is_in_the_form_with_its_description(schema):
    for path, model in sections(FinetuneConfig):
        definition = schema["definitions"][model.__name__]
        assert set(definition["properties"]) == set(model.model_fields), f"{path}: fields missing from the form"
        assert definition.get("additionalProperties") is False, f"{path}: unknown keys must be refused"
        for name, field in model.model_fields.items():
            if not (isinstance(field.annotation, type) and issubclass(field.annotation, pydantic.BaseModel)):
                assert field.description, f"{path}.{name}: no description to show in the form"
                assert definition["properties"][name].get("description") == field.description, f"{path}.{name}"


def test_enums_are_choices_and_optional_fields_are_nullable(schema):
    enums = optional = 0
    for path, model in sections(FinetuneConfig):
        properties = schema["definitions"][model.__name__]["properties"]
        for name, field in model.model_fields.items():
            prop, arguments = properties[name], typing.get_args(field.annotation)
            if isinstance(field.annotation, type) and issubclass(field.annotation, enum.Enum):
                assert referenced(schema, prop)["enum"] == [member.value for member in field.annotation], name
                enums += 1
            if typing.get_origin(field.annotation) in (typing.Union, types.UnionType) and type(None) in arguments:
                assert {"type": "null"} in prop["anyOf"], f"{path}.{name} must accept null in the form"
                optional += 1
    assert enums >= 5 and optional >= 5, "the config has enum and optional fields (task, precision, metric, ...)"


def test_required_fields_are_required_and_defaults_are_the_models(schema):
    for path, model in sections(FinetuneConfig):
        definition = schema["definitions"][model.__name__]
        required = {name for name, field in model.model_fields.items() if field.is_required()}
        assert set(definition.get("required", [])) == required, path
        for name, field in model.model_fields.items():
            default = field.get_default(call_default_factory=True)
            if name not in required and not isinstance(default, pydantic.BaseModel):
                value = default.value if isinstance(default, enum.Enum) else default
                assert definition["properties"][name].get("default") == value, f"{path}.{name}"


def test_the_deployments_parameters_fill_the_form_and_are_valid_configs(schema):
    from prefect.utilities.schema_tools.validation import validate

    spec = yaml.safe_load((REPO / "deployments" / "prefect.yaml").read_text())
    finetunes = [d for d in spec["deployments"] if d["entrypoint"] == "flows/finetune.py:finetune"]
    assert len(finetunes) >= 2
    for deployment in finetunes:
        parameters = deployment["parameters"]
        validate(parameters, schema, raise_on_error=True, preprocess=True)
        FinetuneConfig.model_validate(parameters["config"])
    with pytest.raises(Exception, match="training"):
        validate({"config": {**parameters["config"], "training": {"epochs": "many"}}}, schema,
                 raise_on_error=True, preprocess=True)
