"""What the tests share besides fixtures: tiny models, daemon and process helpers (helpers),
real servers (servers, postgres), the dashboard's fake daemon and browser (dashboard), and the
scripted stations and material of single features. Fixtures are in tests/conftest.py."""
