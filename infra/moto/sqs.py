"""SQS without whole-queue scans on every send and receive. Written for moto 5.2.1 (pinned in
infra/requirements.txt); check it against moto's `moto/sqs/models.py` before moving on.

Measured with `infra/bench-load` (py-spy on the emulator): once the whole-table copies of
transactions were gone (transactions.py), about 70% of the emulator's time went to SQS
bookkeeping that grows with the queue's depth, not with the work:

- `SQSBackend.send_message` reads `queue.attributes` to learn one flag
  (`ContentBasedDeduplication`); that property computes every attribute, including three
  approximate message counts, each a pass over every message in the queue;
- `receive_message` checks each message it returns against the retention period through
  `get_queue_attributes`, which computes `queue.attributes` two or three times: several passes
  over the queue per message received;
- every `Message.visible` and `Message.delayed` check builds datetimes to read the clock.

These patches answer the same values without the passes: the flag and the retention period are
read from the queue's own fields, and the clock is read once with `time.time()`. Message
semantics (visibility, delays, retention, dead letters, FIFO deduplication) are unchanged.
"""

import threading
import time

import pinned
import moto.sqs.models as sqs_models
from moto.sqs.models import Queue, SQSBackend

_sending = threading.local()
_full_attributes = Queue.attributes.fget
_send_message = SQSBackend.send_message


def _attributes(self):
    # Inside send_message only ContentBasedDeduplication is read (FIFO queues list it).
    if getattr(_sending, "active", False):
        if self.fifo_queue:
            return {"ContentBasedDeduplication": str(self.content_based_deduplication).lower()}
        return {}
    return _full_attributes(self)


def _send(self, *args, **kwargs):
    _sending.active = True
    try:
        return _send_message(self, *args, **kwargs)
    finally:
        _sending.active = False


def _within_retention(self, queue_name, message):
    queue = self.get_queue(queue_name)
    retain_until = int(queue.message_retention_period) + message.sent_timestamp / 1000
    return retain_until > time.time()


def _unix_time_millis(dt=None):
    if dt is None:
        return time.time() * 1000.0
    return _original_unix_time_millis(dt)


_original_unix_time_millis = sqs_models.unix_time_millis


def install() -> None:
    pinned.require("sqs.py", "moto/sqs/models.py")
    Queue.attributes = property(_attributes)
    SQSBackend.send_message = _send
    SQSBackend.is_message_valid_based_on_retention_period = _within_retention
    sqs_models.unix_time_millis = _unix_time_millis
