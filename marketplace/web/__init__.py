"""The buyers' page at `/`: one HTML page whose script talks to the REST API with the buyer's
API key (docs/web.md). Only the page is served here; every read and order goes through the API."""
