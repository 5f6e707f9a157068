"""Routing by a source id (a sensor's own id) through a table of productKey and deviceName.

Historical data rarely names the platform's devices; a map file says which device each source is.
The table is read when the pipeline is built and travels with the router: it holds no secret.
"""
from connector.beam.credentials import read_table
from connector.beam.results import Reason
from connector.beam.routing import FieldRouter, RoutingError

_COLUMNS = ("productKey", "deviceName")


def load_device_map(path, id_field):
    """{source id: (productKey, deviceName)} from a JSON list or CSV with columns id_field, productKey,
    deviceName. Ids are compared as text, so 17 in a record matches "17" in a CSV."""
    table = {}
    for number, row in enumerate(read_table(path), 1):
        if not isinstance(row, dict) or row.get(id_field) in (None, "") or not all(row.get(c) for c in _COLUMNS):
            raise ValueError(f"{path}: row {number} needs {id_field}, productKey and deviceName")
        table[str(row[id_field])] = (row["productKey"], row["deviceName"])
    return table


class DeviceMapRouter(FieldRouter):
    """A router (record -> (device, topic)): the record's id_field looked up in the table, the topic made
    from the template as FieldRouter makes it, over the record and its device."""

    def __init__(self, table, id_field, topic):
        super().__init__("productKey", "deviceName", topic)
        self.table = table
        self.id_field = id_field

    def __call__(self, record):
        if not isinstance(record, dict):
            raise RoutingError(Reason.INVALID_RECORD, f"a record must be a dict, got {type(record).__name__}")
        source_id = record.get(self.id_field)
        device = self.table.get(None if source_id is None else str(source_id))
        if device is None:
            raise RoutingError(Reason.UNROUTABLE, f"{self.id_field}={source_id!r} is not in the device map")
        return super().__call__(dict(record, productKey=device[0], deviceName=device[1]))
