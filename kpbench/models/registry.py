"""`--model SPEC`: which pose model a command runs.

A spec is one of

- a built-in name: ``keypointrcnn`` (the default; ``--weights`` picks its weights), or ``yolo`` / ``yolo:PATH.pt``
  (YOLO-pose, the optional extra ``kpbench[yolo]``; without a path, the bundled yolo11n-pose.pt);
- ``FILE.py:Class``: a class in a Python file, imported from that path;
- ``package.module:Class``: a class in an importable module (on sys.path / PYTHONPATH);
- the name of an entry point in the group ``kpbench.models`` of an installed package (``[project.entry-points.
  "kpbench.models"] mymodel = "mypkg.pose:MyModel"``).

The class is called with the run options the user gave among `MODEL_OPTIONS` (``weights``, ``min_size``,
``max_size``, ``box_score_thresh``, ``seed``) that it honours, each under the keyword it declares
(`kpbench.models.base.honoured_options`: its ``run_options``, else its constructor's keywords; all of them when it
takes ``**kwargs``); an option it does not honour is refused, never dropped in silence. The object it returns must
be a `kpbench.models.base.PoseModel`. A bad spec is one KpbenchError.

No torch here: resolving a spec imports only what the spec names.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kpbench.core.errors import KpbenchError
from kpbench.models.base import RUN_OPTIONS, PoseModel, describe_honoured, honoured_options

if TYPE_CHECKING:
    from kpbench.core.schema import KeypointSchema

ENTRY_POINT_GROUP = "kpbench.models"
DEFAULT_MODEL = "keypointrcnn"
BUILTIN_MODELS: dict[str, str] = {
    "keypointrcnn": "kpbench.models.keypointrcnn:KeypointRCNNModel",
    "mediapipe": "kpbench.models.mediapipe:MediaPipePoseModel",  # BlazePose, kpbench[mediapipe] (numpy < 2)
    "mediapipe-crops": "kpbench.models.mediapipe_crops:MediaPipeCropModel",  # BlazePose on person crops (top-down)
}
MODEL_OPTIONS = tuple(RUN_OPTIONS)
_SPEC_FORMS = "keypointrcnn, yolo[:PATH.pt], mediapipe, FILE.py:Class, package.module:Class or an installed `kpbench.models` entry point"


@dataclass(frozen=True)
class ModelSpec:
    """A resolved --model: the spec as recorded (built-in names in lower case), its kind and its factory."""

    spec: str
    kind: str  # "builtin", "file", "module" or "entry_point"
    target: str  # "module:Class" (or "path.py:Class") that the factory came from
    factory: Callable[..., Any]

    @property
    def builtin(self) -> bool:
        return self.kind == "builtin"

    def accepts(self, option: str) -> bool:
        """Whether the model honours run option `option` (`honoured`)."""
        return option in self.honoured()

    def honoured(self) -> dict[str, str]:
        """The run options the model honours: {option: the constructor keyword that receives it}."""
        return honoured_options(self.factory)

    def to_json(self) -> dict[str, str]:
        """The manifest's record of the spec."""
        return {"spec": self.spec, "kind": self.kind, "target": self.target}


def resolve_model(spec: str | None) -> ModelSpec:
    """The factory named by a --model spec (imports the file or module it names, nothing else)."""
    spec = (spec or DEFAULT_MODEL).strip()
    if not spec:
        raise KpbenchError(f"--model: empty spec; give {_SPEC_FORMS}")
    if spec.lower() in BUILTIN_MODELS:
        target = BUILTIN_MODELS[spec.lower()]
        module_name, attr = target.split(":")
        return ModelSpec(spec.lower(), "builtin", target, _attribute(importlib.import_module(module_name), attr, spec))
    if spec.lower() == "yolo" or spec.lower().startswith("yolo:"):
        # YOLO-pose: the bundled yolo11n-pose.pt, or the checkpoint after the colon (kpbench[yolo]).
        import functools

        from kpbench.models.yolo import YoloPoseModel

        checkpoint = spec.partition(":")[2] or None
        if checkpoint is not None and not Path(checkpoint).is_file():
            raise KpbenchError(f"--model {spec}: {checkpoint}: YOLO checkpoint not found")
        factory = functools.partial(YoloPoseModel, weights=checkpoint) if checkpoint else YoloPoseModel
        return ModelSpec(spec if checkpoint else "yolo", "builtin", "kpbench.models.yolo:YoloPoseModel", factory)
    if ":" in spec:
        where, _, attr = spec.rpartition(":")
        if not where or not attr:
            raise KpbenchError(f"--model {spec}: expected FILE.py:Class or package.module:Class")
        if where.endswith(".py") or "/" in where or "\\" in where:
            return ModelSpec(spec, "file", spec, _attribute(_import_file(Path(where), spec), attr, spec))
        return ModelSpec(spec, "module", spec, _attribute(_import_module(where, spec), attr, spec))
    entry = _entry_points().get(spec)
    if entry is not None:
        try:
            factory = entry.load()
        except Exception as exc:  # the plugin's own import failed: say which plugin and why, in one line
            raise KpbenchError(f"--model {spec}: entry point {entry.value!r} failed to load ({_one_line(exc)})") from None
        return ModelSpec(spec, "entry_point", str(entry.value), _check_factory(factory, spec))
    installed = sorted(_entry_points())
    known = ", ".join([*BUILTIN_MODELS, "yolo", *installed])
    hint = " (a file needs :Class, e.g. model.py:MyModel)" if spec.endswith(".py") else ""
    raise KpbenchError(f"--model {spec}: unknown model{hint}; known: {known}; or give {_SPEC_FORMS}")


def check_model_options(
    spec: str | ModelSpec | None, weights: str | None, given: Mapping[str, Any] | None = None,
    sources: Mapping[str, str] | None = None,
) -> tuple[ModelSpec, str | None]:
    """Cheap checks before anything heavy: the resolved spec and the canonical weights. A factory with a
    `check_weights(weights)` (Keypoint R-CNN: names, "none", a checkpoint file) checks and canonicalises them;
    weights for a model that takes none are an error, and so is any other run option in `given` (the options the
    user gave, {key: value}) that the model does not honour. `sources` ({key: "command line" or a config path},
    `kpbench.core.config`) lets the message say where an option was given."""
    resolved = spec if isinstance(spec, ModelSpec) else resolve_model(spec)
    check = getattr(resolved.factory, "check_weights", None)
    if callable(check):
        weights = check(weights)
    options = {k: v for k, v in (given or {}).items() if v is not None and k != "weights"}
    if weights is not None:
        options = {"weights": weights, **options}
    refuse_unhonoured(resolved, options, sources)
    return resolved, weights


def given_model_options(settings: Any) -> dict[str, Any]:
    """The run options of a command's settings (`kpbench.core.config.RunSettings`, SpeedSettings) that the user
    gave, weights aside, {key: value}: defaults not given are left out, so that a model's own defaults apply and
    an option the model does not honour is refused only when someone asked for it (`given_settings`)."""
    from kpbench.core.config import given_settings, setting_fields

    keys = [f.name for f in setting_fields(settings) if f.name in MODEL_OPTIONS and f.name != "weights"]
    return given_settings(settings, keys)


def refuse_unhonoured(spec: ModelSpec, options: Mapping[str, Any], sources: Mapping[str, str] | None = None) -> None:
    """A one-line KpbenchError for the first of `options` (run options given, {key: value}) that the model of `spec`
    does not honour; an unknown key is a ValueError (a bug of the caller)."""
    unknown = sorted(set(options) - set(MODEL_OPTIONS))
    if unknown:
        raise ValueError(f"unknown model options {unknown}; known: {MODEL_OPTIONS}")
    honoured = spec.honoured()
    for key in MODEL_OPTIONS:
        if key not in options or key in honoured:
            continue
        where = (sources or {}).get(key)
        label = f"{RUN_OPTIONS[key]} {options[key]}" + (f" ('{key}' in {where})" if where and where != "command line"
                                                        else "")
        if key == "weights":
            if spec.spec.lower().startswith("yolo:"):
                raise KpbenchError(f"--weights: model {spec.spec} names its checkpoint already; give one of them")
            raise KpbenchError(f"--weights: model {spec.spec} takes no weights (its constructor has no `weights`)")
        raise KpbenchError(f"{label}: model {spec.spec} does not honour it (it honours "
                           f"{describe_honoured(honoured)}); leave it out")


def load_model(spec: str | ModelSpec | None, **options: Any) -> PoseModel:
    """Build the model of a spec with the run options given (None values are not given: the model's own defaults
    apply), each passed under the constructor keyword the model declares for it; an option the model does not
    honour is a KpbenchError, never dropped. The result is checked to be a PoseModel."""
    resolved = spec if isinstance(spec, ModelSpec) else resolve_model(spec)
    given = {k: v for k, v in options.items() if v is not None}
    refuse_unhonoured(resolved, given)
    honoured = resolved.honoured()
    model = resolved.factory(**{honoured[k]: v for k, v in given.items()})
    return check_pose_model(model, resolved.spec)


def check_pose_model(model: Any, spec: str) -> PoseModel:
    """`model` itself when it has schema, predict() and info(); else a KpbenchError naming what is missing."""
    from kpbench.core.schema import KeypointSchema

    if not isinstance(model, PoseModel):
        missing = [name for name in ("schema", "predict", "info") if not hasattr(model, name)]
        raise KpbenchError(f"--model {spec}: {type(model).__name__} is not a kpbench PoseModel (it has no "
                           f"{', '.join(missing)}; see kpbench.models.base)")
    if not isinstance(model.schema, KeypointSchema):
        raise KpbenchError(f"--model {spec}: its schema is a {type(model.schema).__name__}, not a KeypointSchema")
    return model


def _import_file(path: Path, spec: str) -> Any:
    """Import a Python file as a module of its own (named after its resolved path, so two files never clash)."""
    if path.suffix != ".py":
        raise KpbenchError(f"--model {spec}: {path} is not a .py file")
    if not path.is_file():
        raise KpbenchError(f"--model {spec}: {path}: file not found")
    resolved = path.resolve()
    name = f"kpbench_model_{resolved.stem}_{hashlib.sha256(str(resolved).encode()).hexdigest()[:8]}"
    if name in sys.modules:
        return sys.modules[name]
    module_spec = importlib.util.spec_from_file_location(name, resolved)
    if module_spec is None or module_spec.loader is None:
        raise KpbenchError(f"--model {spec}: {path}: cannot be imported")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module  # dataclasses and pickling look classes up by module name
    try:
        module_spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[name]
        raise KpbenchError(f"--model {spec}: {path} failed to import ({_one_line(exc)})") from exc
    return module


def _import_module(name: str, spec: str) -> Any:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (name == exc.name or name.startswith(exc.name + ".")):
            raise KpbenchError(f"--model {spec}: no module named {exc.name!r} (is it on PYTHONPATH or installed?)") from None
        raise KpbenchError(f"--model {spec}: module {name} failed to import ({_one_line(exc)})") from exc
    except Exception as exc:
        raise KpbenchError(f"--model {spec}: module {name} failed to import ({_one_line(exc)})") from exc


def _attribute(module: Any, attr: str, spec: str) -> Callable[..., Any]:
    """`module.attr` (dotted for nested classes), checked to be callable."""
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            classes = sorted(n for n, v in vars(module).items() if inspect.isclass(v) and not n.startswith("_")
                             and getattr(v, "__module__", None) == module.__name__)
            found = f"; it defines {', '.join(classes)}" if classes else ""
            raise KpbenchError(f"--model {spec}: no {attr!r} in {getattr(module, '__file__', None) or module.__name__}{found}")
        obj = getattr(obj, part)
    return _check_factory(obj, spec)


def _check_factory(obj: Any, spec: str) -> Callable[..., Any]:
    """A class (or factory function) whose instances have predict() and info(); checked before building it, so a
    wrong name fails before any heavy set-up."""
    if not callable(obj):
        raise KpbenchError(f"--model {spec}: {obj!r} is not a class")
    if inspect.isclass(obj):
        # A top-down crop model (kpbench.models.topdown) has predict_crops instead of predict.
        whole = "predict_crops" if callable(getattr(obj, "predict_crops", None)) else "predict"
        missing = [name for name in (whole, "info") if not callable(getattr(obj, name, None))]
        if missing:
            raise KpbenchError(f"--model {spec}: {obj.__name__} is not a kpbench PoseModel (it has no "
                               f"{', '.join(m + '()' for m in missing)}; see kpbench.models.base)")
    return obj


def _entry_points() -> dict[str, Any]:
    """The installed `kpbench.models` entry points by name (the first one wins where two packages clash)."""
    from importlib.metadata import entry_points

    found: dict[str, Any] = {}
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        found.setdefault(entry.name, entry)
    return found


def declared_schema(spec: str | ModelSpec | None) -> KeypointSchema | None:
    """The keypoint schema a model's class declares as a class attribute (known before building the model, so
    that the ground truth can be checked against it first), or None when it sets one only on its instances."""
    from kpbench.core.schema import KeypointSchema

    resolved = spec if isinstance(spec, ModelSpec) else resolve_model(spec)
    schema = getattr(resolved.factory, "schema", None)
    return schema if isinstance(schema, KeypointSchema) else None


def available_models() -> list[str]:
    """The built-in names and the installed entry points, for help texts."""
    return [*BUILTIN_MODELS, "yolo", *sorted(_entry_points())]


def _one_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
