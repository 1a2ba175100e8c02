"""What a process tells about itself: log lines with the ids of their request, Prometheus
metrics and OpenTelemetry traces. Basics like `agenthost.core`: every layer may record into
them, and they import nothing above them."""
