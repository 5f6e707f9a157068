"""WriteToIoTPlatform for Beam YAML, through Beam's `python` provider:

    providers:
      - type: python
        config: {}
        transforms:
          WriteToIoTPlatform: connector.beam.yaml_provider.write_to_iot_platform

Failed records follow Beam YAML's error handling: with `error_handling: {output: name}` they come out
on that output as rows of `element` (the input row), `msg` and the FailedRecord's fields; without it,
the first failed record fails the pipeline, as any YAML transform's error does.

Every option of WriteToIoTPlatform is a config field of the same name and default (OPTIONS, one row
per option, says how YAML gives it); a mapping for `retry` and `encoder_options`, the dotted name of a
Python function for `router`.
"""
import importlib
import inspect
from collections.abc import Callable, Mapping
from typing import Any, NoReturn, Optional

import apache_beam as beam
import docstring_parser
from apache_beam.pvalue import PCollection, Row
from apache_beam.typehints.row_type import RowTypeConstraint
from apache_beam.typehints.schemas import named_fields_from_element_type

from .hints import not_type_hints
from .publisher import RetryPolicy
from .results import FailedRecord
from .rows import ToRows
from .write import WriteToIoTPlatform


def _python_callable(name: Optional[str]) -> Optional[Callable[..., Any]]:
    """The function a dotted name ("package.module.function") names, importable on the launcher."""
    if name is None:
        return None
    module, _, attribute = name.rpartition(".")
    if not module:
        raise ValueError(f"a Python callable is given by its dotted name, package.module.function: {name!r}")
    found: Callable[..., Any] = getattr(importlib.import_module(module), attribute)
    return found


def _retry_policy(fields: Optional[Mapping[str, Any]]) -> RetryPolicy:
    return RetryPolicy(**(fields or {}))


# Each option of WriteToIoTPlatform as Beam YAML gives it: the type of its config field, and what makes
# the transform's argument of the value (None: the value as it is), with what YAML users need to know.
# Every parameter of WriteToIoTPlatform.__init__ has its row (tests/test_yaml.py checks); defaults and
# descriptions are the transform's own.
OPTIONS: dict[str, tuple[Any, Optional[Callable[[Any], Any]], str]] = {
    "endpoint": (str, None, ""),
    "credentials": (str, None, "In YAML, the path of the file."),
    "topic": (Optional[str], None, "In YAML, a template."),
    "encoder": (str, None, "In YAML, its name."),
    "ca_file": (Optional[str], None, ""),
    "max_payload_bytes": (int, None, ""),
    "encoder_options": (Optional[Mapping[str, Any]], None, "In YAML, a mapping."),
    "product_key_field": (str, None, ""),
    "device_name_field": (str, None, ""),
    "router": (Optional[str], _python_callable, "In YAML, the dotted name of a Python function."),
    "order_by": (Optional[str], None, ""),
    "sort_buffer_bytes": (int, None, ""),
    "streaming": (Optional[bool], None, ""),
    "max_buffering_delay": (Optional[float], None, ""),
    "max_in_flight": (int, None, ""),
    "max_buffered_bytes": (int, None, ""),
    "device_messages_per_second": (float, None, ""),
    "retry": (Optional[Mapping[str, Any]], _retry_policy,
              "In YAML, a mapping of RetryPolicy's fields (max_attempts, max_seconds, ...); unset ones keep "
              "their defaults."),
    "connect_timeout": (float, None, ""),
    "read_timeout": (float, None, ""),
    "insecure_skip_tls_verify": (bool, None, ""),
    "sign_method": (str, None, ""),
    "processing_clock": (Optional[str], _python_callable, "In YAML, the dotted name of a Python function."),
}
_TRANSFORM = inspect.signature(WriteToIoTPlatform.__init__)
_ERROR_HANDLING = "error_handling"


def write_to_iot_platform(endpoint: str, credentials: str, **config: Any) -> "_YamlWrite":
    """Publish rows to IoT Platform over its HTTPS device channel.

    Outputs `published` (one row per accepted message) and, with error_handling, the failed records.
    """
    error_handling: Mapping[str, Any] = config.pop(_ERROR_HANDLING, None) or {}
    unknown = sorted(set(config) - set(OPTIONS))
    if unknown:
        raise TypeError(f"WriteToIoTPlatform has no option {', '.join(map(repr, unknown))}")
    options = {}
    for name, value in config.items():
        convert = OPTIONS[name][1]
        options[name] = value if convert is None else convert(value)
    return _YamlWrite(WriteToIoTPlatform(endpoint, credentials, **options), error_handling.get("output"))


def _yaml_signature() -> inspect.Signature:
    """write_to_iot_platform's signature, as Beam YAML reads it for the config's fields: the transform's
    parameters with their YAML types, its defaults where YAML can write them, and error_handling."""
    parameters = []
    for name, parameter in _TRANSFORM.parameters.items():
        if name == "self":
            continue
        default = parameter.default
        if not (default is parameter.empty or default is None or isinstance(default, (str, int, float, bool))):
            default = None  # the transform's own default (a RetryPolicy): YAML cannot write it
        kind = parameter.kind if parameter.kind is inspect.Parameter.KEYWORD_ONLY else \
            inspect.Parameter.POSITIONAL_OR_KEYWORD
        parameters.append(inspect.Parameter(name, kind, default=default, annotation=OPTIONS[name][0]))
    parameters.append(inspect.Parameter(_ERROR_HANDLING, inspect.Parameter.KEYWORD_ONLY, default=None,
                                        annotation=Optional[Mapping[str, Any]]))
    return inspect.Signature(parameters, return_annotation="_YamlWrite")


def _yaml_docstring() -> str:
    """write_to_iot_platform's docstring, its Args (which Beam YAML shows for each config field) the
    transform's own, with what YAML users need to know."""
    described = {param.arg_name: " ".join((param.description or "").split())
                 for param in docstring_parser.parse(WriteToIoTPlatform.__init__.__doc__ or "").params}
    lines = [(write_to_iot_platform.__doc__ or "").rstrip(), "", "    Args:"]
    for name, (_, _, note) in OPTIONS.items():
        lines.append(f"      {name}: {' '.join(filter(None, (described.get(name, ''), note)))}")
    lines.append(f"      {_ERROR_HANDLING}: {{output: name}}, the output failed records go to.")
    return "\n".join(lines) + "\n"


write_to_iot_platform.__signature__ = _yaml_signature()  # type: ignore[attr-defined]
write_to_iot_platform.__doc__ = _yaml_docstring()


class _YamlWrite(beam.PTransform[PCollection[Any], dict[str, PCollection[Any]]]):
    """Applies WriteToIoTPlatform and shapes its outputs as Beam YAML expects them."""

    def __init__(self, write: WriteToIoTPlatform, error_output: Optional[str]) -> None:
        super().__init__()
        self._write = write
        self._error_output = error_output

    @not_type_hints
    def expand(self, rows: PCollection[Any]) -> dict[str, PCollection[Any]]:
        result = rows | "WriteToIoTPlatform" >> self._write
        outputs = {"published": result.published | "Published" >> ToRows()}
        if self._error_output is None:
            result.failed | "FailOnFailedRecords" >> beam.Map(_raise)
        else:
            outputs[self._error_output] = result.failed | "ErrorRows" >> beam.Map(
                _error_row, rows.element_type).with_output_types(_error_row_type(rows.element_type))
        return outputs


class FailedRecordError(RuntimeError):
    """A record was not published and the YAML transform has no error_handling output to send it to."""


@not_type_hints
def _raise(failed: FailedRecord) -> NoReturn:
    where = f" ({failed.product_key}/{failed.device_name})" if failed.device_name else ""
    raise FailedRecordError(f"a record was not published{where}: {failed.reason}: {failed.message}; "
                            "add error_handling: {output: ...} to keep such records")


def _error_row_type(element_type: Any) -> RowTypeConstraint:
    fields: list[tuple[str, Any]] = [
        ("element", element_type), ("msg", str), ("reason", str), ("code", Optional[int]),
        ("product_key", Optional[str]), ("device_name", Optional[str]),
        ("topic", Optional[str]), ("attempts", int)]
    return RowTypeConstraint.from_fields(fields)


@not_type_hints
def _error_row(failed: FailedRecord, element_type: Any) -> Row:
    """Beam YAML's error row (element, msg) with the FailedRecord's fields; element is the input row."""
    return Row(element=_as_row(failed.record, element_type),
                    msg=f"{failed.reason}: {failed.message}", reason=failed.reason, code=failed.code,
                    product_key=failed.product_key, device_name=failed.device_name, topic=failed.topic,
                    attempts=failed.attempts)


def _as_row(record: Any, row_type: Any) -> Any:
    """The input row back from the dict the sink made of it (nested rows too; maps stay dicts)."""
    if not isinstance(record, dict):
        return record
    try:
        types = dict(named_fields_from_element_type(row_type))
    except (TypeError, ValueError, AttributeError):
        return record  # not a row type: a map field
    return Row(**{name: _as_row(value, types.get(name)) for name, value in record.items()})
