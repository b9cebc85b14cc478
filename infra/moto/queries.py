"""DynamoDB queries without sorting the whole table. Written for moto 5.2.1 (pinned in
infra/requirements.txt); check it against moto's `Table.query` before moving on.

moto 5.2.1's `Table.query` collects its candidates from `Table.all_items()`, which sorts every
item of the table, for every query: a query of one user's partition (history, access, the
export) and each of the sweep's index queries cost O(n log n) in everything stored, with a
DynamoType comparison per step (measured with `infra/bench-load` and py-spy: about half of the
emulator's time once the table held a few thousand items).

The candidates are now the queried partition only (a base-table query), or every item unsorted
(an index query: moto sorts the candidates by the index's keys, then the table's, right after).
The rest of moto's query (conditions, ordering, paging, filters, limits) runs unchanged.
"""

import pinned
from moto.dynamodb.models.table import Table

_query = Table.query


def _candidates(table, hash_key, index_name):
    if index_name is None and hash_key is not None:
        partition = table.items.get(hash_key)
        if partition is None:
            return []
        return list(partition.values()) if table.range_key_attr else [partition]
    items = []
    for hash_set in table.items.values():
        if table.range_key_attr:
            items.extend(hash_set.values())
        else:
            items.append(hash_set)
    return items


def query(self, hash_key, range_comparison, range_objs, limit, exclusive_start_key,
          scan_index_forward, projection_expressions, index_name=None, *args, **kwargs):
    candidates = _candidates(self, hash_key, index_name)
    # Table.query reads its candidates through self.all_items(); for this call only, that is
    # the list above (DynamoDB requests are serialized by serve.py).
    self.all_items = lambda: candidates
    try:
        return _query(self, hash_key, range_comparison, range_objs, limit, exclusive_start_key,
                      scan_index_forward, projection_expressions, index_name, *args, **kwargs)
    finally:
        del self.all_items


def install() -> None:
    pinned.require("queries.py", "Table.query")
    Table.query = query
