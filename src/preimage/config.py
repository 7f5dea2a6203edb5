"""Configuration: JSON-schema validation with defaults and one clear message per problem.

``rules/common.smk`` calls :func:`validate_config` before any job runs. The schema lives in
``workflow/schemas/config.schema.yaml``; defaults there are filled in (recursively), then the
result is validated; semantic checks that a schema cannot express (a data root that must exist)
follow. Errors are collected into one :class:`ConfigError` whose message names every offending
key as a dotted path (``data.size``), so a user sees what to fix instead of a traceback; a
single problem is one line.

With ``deep=True`` (the main Snakemake process; not the jobs it starts) two more checks run
that would otherwise fail only inside a job, possibly after hours of extraction:
``torchvision:<model>:<node>`` names are checked against torchvision's models and the model's
graph nodes (traced on the ``meta`` device, no weights), and for ``data.source`` ``folder`` and
``imagenet`` the candidate image files of every class are counted (listing only, nothing decoded;
skipped once ``{results}/data/train.h5`` and ``test.h5`` exist, so that later runs on ImageNet do
not list 1.28 M files each time; extraction itself still stops early when a class is short).
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any, Dict, List, Mapping, MutableMapping

import jsonschema
import yaml

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"


class ConfigError(ValueError):
    """The configuration is invalid; ``str(err)`` is the message for the user."""


def load_schema(path: str | os.PathLike | None = None) -> Dict[str, Any]:
    with open(path or SCHEMA_PATH) as handle:
        return yaml.safe_load(handle)


def fill_defaults(instance: MutableMapping[str, Any], schema: Mapping[str, Any]) -> None:
    """Insert the schema's ``default`` for every missing property, recursing into objects."""
    for key, sub in schema.get("properties", {}).items():
        if key not in instance and "default" in sub:
            instance[key] = copy.deepcopy(sub["default"])
        if isinstance(instance.get(key), dict) and sub.get("type") == "object":
            fill_defaults(instance[key], sub)


def _allowed_types(schema: Mapping[str, Any]) -> set:
    types = schema.get("type")
    allowed = set([types] if isinstance(types, str) else types or [])
    for option in schema.get("oneOf", []) + schema.get("anyOf", []):
        allowed |= _allowed_types(option)
    return allowed


def _option_of_type(schema: Mapping[str, Any], kind: str) -> Mapping[str, Any]:
    """The schema itself, or its first ``oneOf``/``anyOf`` option that describes a ``kind``."""
    for option in schema.get("oneOf", []) + schema.get("anyOf", []):
        if kind in _allowed_types(option):
            return option
    return schema


def coerce_command_line_strings(instance: Any, schema: Mapping[str, Any]) -> Any:
    """Turn strings into the types the schema asks for.

    ``snakemake --config data='{seed: 3}'`` parses nested values with YAML's BaseLoader, so every
    nested scalar arrives as a string ('3'); re-read such strings with YAML where the schema does
    not accept a string there.
    """
    if isinstance(instance, dict):
        schema = _option_of_type(schema, "object")
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        extra = extra if isinstance(extra, Mapping) else {}
        return {k: coerce_command_line_strings(v, props.get(k, extra)) for k, v in instance.items()}
    if isinstance(instance, list):
        schema = _option_of_type(schema, "array")
        return [coerce_command_line_strings(v, schema.get("items", {})) for v in instance]
    if isinstance(instance, str):
        allowed = _allowed_types(schema)
        if instance in ("null", "~") and "null" in allowed:
            return None
        if allowed and "string" not in allowed:
            try:
                return yaml.safe_load(instance)
            except yaml.YAMLError:
                return instance
    return instance


def _dotted(path) -> str:
    return ".".join(str(p) for p in path) or "<top level>"


def _describe(error: jsonschema.ValidationError) -> str:
    where = _dotted(error.absolute_path)
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(allowed))
        prefix = f"{where}." if error.absolute_path else ""
        return (
            f"unknown key{'s' if len(extra) > 1 else ''} {', '.join(prefix + k for k in extra)} "
            f"(allowed here: {', '.join(allowed)})"
        )
    if error.validator in ("oneOf", "anyOf") and "description" in error.schema:
        return f"{where}: {error.instance!r} is invalid; expected {error.schema['description']}"
    if error.validator == "enum":
        return f"{where}: {error.instance!r} is not one of {', '.join(map(repr, error.validator_value))}"
    if error.validator == "pattern" and "representations" in [str(p) for p in error.absolute_path]:
        return (
            f"{where}: unknown representation {error.instance!r}; use hog, hogb, dsift, lbp, sift, conv1..conv5, fc6..fc8 "
            "or torchvision:<model>:<node>"
        )
    return f"{where}: {error.message}"


def validate_config(config: Mapping[str, Any], schema: Mapping[str, Any] | None = None,
                    deep: bool = False) -> Dict[str, Any]:
    """Return a validated deep copy of ``config`` with defaults filled in, or raise :class:`ConfigError`.

    ``deep`` adds :func:`deep_problems` (torchvision names, image counts), run only once the
    rest is valid."""
    schema = schema if schema is not None else load_schema()
    result = coerce_command_line_strings(copy.deepcopy(dict(config)), schema)
    fill_defaults(result, schema)
    validator = jsonschema.Draft7Validator(schema)
    problems: List[str] = sorted(
        {_describe(e) for e in validator.iter_errors(result)}
    )
    if not problems:
        problems.extend(semantic_problems(result))
    if not problems and deep:
        problems.extend(deep_problems(result))
    if len(problems) == 1:
        raise ConfigError(f"invalid configuration: {problems[0]}")
    if problems:
        raise ConfigError("invalid configuration:\n  - " + "\n  - ".join(problems))
    return result


def deep_problems(config: Mapping[str, Any]) -> List[str]:
    """Checks that look outside the config: torchvision model and node names, and (for the folder
    and imagenet sources) whether every class has enough candidate image files."""
    problems = []
    for name in config.get("representations", []):
        if name.startswith("torchvision:"):
            from preimage.features.torchvision_net import name_problem

            problem = name_problem(name)
            if problem:
                problems.append(f"representations: {problem}")
    data = config.get("data", {})
    results = Path(config.get("results", "results")) / "data"
    extracted = (results / "train.h5").exists() and (results / "test.h5").exists()
    if data.get("source") in ("folder", "imagenet") and not extracted:
        from preimage.data import candidate_shortfalls

        problems.extend(candidate_shortfalls(data))
    return problems


def _differentiable(name: str) -> bool:
    """Whether the representation class registered for ``name`` passes gradients to the image
    (unknown names are the schema's business: reported there, not here)."""
    from preimage.features import lookup

    try:
        return bool(lookup(name).differentiable)
    except KeyError:
        return True


def semantic_problems(config: Mapping[str, Any]) -> List[str]:
    """Checks beyond the schema: existence of data roots and consistency between keys."""
    problems = []
    data = config.get("data", {})
    if data.get("source") in ("folder", "imagenet"):
        root = data.get("root")
        if not root:
            problems.append(f"data.root: required when data.source is {data['source']!r}")
        elif not Path(root).is_dir():
            problems.append(f"data.root: {root!r} does not exist or is not a folder")
    elif data.get("source") == "builtin" and isinstance(data.get("classes"), list):
        problems.append("data.classes: the builtin source takes null or a count (of training photographs), not a list")
    from preimage.representations import ALEXNET_LAYERS

    alexnet = set(ALEXNET_LAYERS)
    net = config.get("features", {}).get("alexnet", {})
    if net.get("arch") == "caffenet" and str(net.get("weights", "")).startswith("imagenet"):
        problems.append("features.alexnet.weights: caffenet has no downloadable imagenet weights; give the path of a "
                        "state dict converted from bvlc_reference_caffenet.caffemodel, or random")
    problems.extend(_store_problems(config))
    mv = config.get("baselines", {}).get("mahendran_vedaldi", {}).get("representations", [])
    for name in mv:
        if not _differentiable(name):
            problems.append(f"baselines.mahendran_vedaldi.representations: {name!r} is not differentiable here "
                            "(hog, hogb, dsift, conv1 … fc8 and the network nodes are)")
    problems.extend(loss_problems(config))
    locality = config.get("analyses", {}).get("locality", {})
    for name in locality.get("layers") or []:
        if not _differentiable(name):
            problems.append(f"analyses.locality.layers: {name!r} is not differentiable (the optimisation needs "
                            "gradients; hog, hogb, dsift, conv1 … fc8 and the network nodes are)")
    analyses = config.get("analyses", {})
    for key in ("perturbation", "interpolation", "random_samples", "single_units"):
        for name in analyses.get(key, {}).get("layers") or []:
            if name not in alexnet and not name.startswith(("torchvision:", "efficientnet_lite0:")):
                problems.append(f"analyses.{key}.layers: {name!r} is not a CNN representation "
                                "(conv1 … fc8, torchvision:<model>:<node>, efficientnet_lite0:<node>)")
    return problems


def loss_problems(config: Mapping[str, Any]) -> List[str]:
    """The feature-space losses of Appendix A need a differentiable representation: ``variants.feature``
    and ``variants.gan`` entries and ``decoder.loss`` values other than ``pixel`` for SIFT or LBP
    (classes that declare ``differentiable = False``) are refused before any job runs."""
    from preimage.features.base import lookup
    from preimage.representations import slug_of

    def differentiable(name: str):
        try:
            return bool(getattr(lookup(name), "differentiable", False))
        except KeyError:
            return None

    usable = "hog, conv1 … fc8, torchvision:<model>:<node> and efficientnet_lite0:<node> are"
    problems = []
    for key in ("feature", "gan"):
        for name in config.get("variants", {}).get(key) or []:
            known = differentiable(name)
            if known is None:
                problems.append(f"variants.{key}: unknown representation {name!r}")
            elif not known:
                problems.append(f"variants.{key}: {name!r} is not differentiable: the {key} loss needs the gradient of "
                                f"its features with respect to the image ({usable})")
    loss = config.get("decoder", {}).get("loss", "pixel")
    for name in config.get("representations", []):
        if isinstance(loss, Mapping):
            value = next((loss[k] for k in (name, slug_of(name)) if k in loss), loss.get("default", "pixel"))
        else:
            value = loss
        if value != "pixel" and differentiable(name) is False:
            problems.append(f"decoder.loss: {value} for {name!r}, which is not differentiable: feature-space losses "
                            f"need the gradient of its features with respect to the image ({usable}); use pixel")
    return problems


def _store_problems(config: Mapping[str, Any]) -> List[str]:
    """``features.store``: keys that are no representation, family or ``default`` (a typo would
    otherwise be ignored), and ``recompute`` for a sparse representation (SIFT's keypoints are
    only cached). Keys naming representations that this config does not run are allowed, so that
    one setting serves configs with shorter representation lists."""
    store = config.get("features", {}).get("store", "cache")
    if not isinstance(store, Mapping):
        store = {"default": store}
    from preimage.features import base
    from preimage.representations import slug_of

    base.known_names()  # registers the built-in representations
    families = {cls.family for cls in list(base._REGISTRY.values()) + list(base._PREFIX_REGISTRY.values())}

    def is_representation(key: str) -> bool:
        key = key[:-3] if key.endswith("-ae") else key[:-7] if key.endswith("-random") else key
        if "@" in key:  # a slug: family@node, model@node
            return True
        try:
            base.lookup(key)
            return True
        except KeyError:
            return False

    problems = [f"features.store.{key}: not a representation, a family ({', '.join(sorted(families))}) or default"
                for key in store if key != "default" and key not in families and not is_representation(key)]
    for name in config.get("representations", []):
        cls = base.lookup(name)
        chosen = next((store[k] for k in (slug_of(name), name, cls.family, "default") if k in store), "cache")
        if chosen == "recompute" and cls.sparse:
            problems.append(f"features.store: {name} stores keypoints and can only be cached (recompute is for "
                            "dense representations)")
    return problems
