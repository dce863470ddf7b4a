.PHONY: quickstart test setup lint
quickstart:
	bash scripts/quickstart.sh
test:
	bash scripts/test.sh
setup:
	bash scripts/setup.sh
lint:
	.venv/bin/ruff check src tests
	.venv/bin/mypy src
