"""The labeling agent: LangGraph graph, aggregation, calibration, learning. Never imports service."""
