"""Developer tools, run from a checkout and never imported by the gateway or its services.

They may need the test extra (`protogen` needs grpcio-tools), which a production install
does not have.
"""
