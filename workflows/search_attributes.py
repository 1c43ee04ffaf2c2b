"""qloop's custom search attributes, registered on the server by temporal-dev/stack.sh."""

from temporalio.common import SearchAttributeKey

STAGE = SearchAttributeKey.for_keyword("QloopStage")
BACKEND = SearchAttributeKey.for_keyword("QloopBackend")
PROVIDER = SearchAttributeKey.for_keyword("QloopProvider")
ACCOUNT = SearchAttributeKey.for_keyword("QloopAccount")
ESTIMATED_COST_USD = SearchAttributeKey.for_float("QloopEstimatedCostUsd")
AWAITING_APPROVAL = SearchAttributeKey.for_bool("QloopAwaitingApproval")
JOB_STATUS = SearchAttributeKey.for_keyword("QloopJobStatus")
QUEUE_POSITION = SearchAttributeKey.for_int("QloopQueuePosition")
