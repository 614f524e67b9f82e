"""Generated from proto/inference.proto by `python -m appliance.devtools.protogen`; do not edit."""
