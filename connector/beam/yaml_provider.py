"""WriteToIoTPlatform for Beam YAML, through Beam's `python` provider:

    providers:
      - type: python
        config: {}
        transforms:
          WriteToIoTPlatform: connector.beam.yaml_provider.write_to_iot_platform

Failed records follow Beam YAML's error handling: with `error_handling: {output: name}` they come out
on that output as rows of `element` (the input row), `msg` and the FailedRecord's fields; without it,
the first failed record fails the pipeline, as any YAML transform's error does.
"""
from collections.abc import Mapping
from typing import Any, NoReturn, Optional

import apache_beam as beam
from apache_beam.pvalue import PCollection, Row
from apache_beam.typehints.row_type import RowTypeConstraint
from apache_beam.typehints.schemas import named_fields_from_element_type

from connector.protocol.limits import DEVICE_MESSAGES_PER_SECOND, MAX_PAYLOAD_BYTES
from connector.protocol.signing import CLIENT_SIGN_METHOD

from .hints import not_type_hints
from .publisher import DEFAULT_MAX_IN_FLIGHT
from .results import FailedRecord
from .rows import ToRows
from .write import WriteToIoTPlatform


def write_to_iot_platform(endpoint: str, credentials: str, topic: Optional[str] = None, encoder: str = "jsonl",
                          ca_file: Optional[str] = None, max_payload_bytes: int = MAX_PAYLOAD_BYTES,
                          product_key_field: str = "productKey", device_name_field: str = "deviceName",
                          order_by: Optional[str] = None, max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
                          device_messages_per_second: float = DEVICE_MESSAGES_PER_SECOND,
                          insecure_skip_tls_verify: bool = False, sign_method: str = CLIENT_SIGN_METHOD,
                          error_handling: Optional[Mapping[str, Any]] = None) -> "_YamlWrite":
    """Publish rows to IoT Platform over its HTTPS device channel.

    Outputs `published` (one row per accepted message) and, with error_handling, the failed records.

    Args:
      endpoint: the platform's HTTPS endpoint, e.g. https://iot-as-http.cn-shanghai.aliyuncs.com
      credentials: path of a JSON or CSV file of productKey, deviceName, deviceSecret
      topic: template over productKey, deviceName and the row's fields; default the encoder's
      encoder: jsonl, json-array, avro (its schema from the input's), alink-property or alink-history
      ca_file: a CA bundle to verify the endpoint with
      max_payload_bytes: the payload limit (at most the platform's)
      product_key_field: the field holding the productKey
      device_name_field: the field holding the deviceName
      order_by: a field to order each device's rows by before packing
      max_in_flight: HTTP requests open at once per worker process
      device_messages_per_second: the pace kept per device
      insecure_skip_tls_verify: turn certificate checks off (never the default)
      sign_method: hmacsha1, hmacmd5 or hmacsha256
      error_handling: {output: name}, the output failed records go to
    """
    write = WriteToIoTPlatform(
        endpoint, credentials, topic=topic, encoder=encoder, ca_file=ca_file, max_payload_bytes=max_payload_bytes,
        product_key_field=product_key_field, device_name_field=device_name_field, order_by=order_by,
        max_in_flight=max_in_flight, device_messages_per_second=device_messages_per_second,
        insecure_skip_tls_verify=insecure_skip_tls_verify, sign_method=sign_method)
    return _YamlWrite(write, (error_handling or {}).get("output"))


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
