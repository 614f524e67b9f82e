"""Generated from proto/inference.proto by `python -m appliance.inference.protogen`; do not edit."""
