"""Publish runs to Hugging Face Hub, MLflow, W&B, TensorBoard, webhooks — each a plugin behind one interface."""

from evalkeeper.publish.base import (
    BaseSink,
    PublishContext,
    PublishResult,
    Sink,
    SinkError,
    SinkOptions,
    TransientSinkError,
    build_results,
    gate_summary,
)
from evalkeeper.publish.config import Destination, apply_overrides, build_sink, load_config, parse_target
from evalkeeper.publish.redact import display_url, redact, redaction_active, register_secret
from evalkeeper.publish.registry import ENTRY_POINT_GROUP, SinkInfo, discover_sinks, get_sink_class
from evalkeeper.publish.runner import PublishReport, SinkOutcome, build_context, is_transient, publish_run
from evalkeeper.publish.urlcheck import OutboundURLRefused, check_outbound_url, post_json_safely

__all__ = [
    "ENTRY_POINT_GROUP", "BaseSink", "Destination", "OutboundURLRefused", "PublishContext", "PublishReport",
    "PublishResult", "Sink", "SinkError", "SinkInfo", "SinkOptions", "SinkOutcome", "TransientSinkError",
    "apply_overrides", "build_context", "build_results", "build_sink", "check_outbound_url", "discover_sinks",
    "display_url", "gate_summary", "get_sink_class", "is_transient", "load_config", "parse_target", "post_json_safely",
    "publish_run", "redact", "redaction_active", "register_secret",
]
