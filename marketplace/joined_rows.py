"""Model instances from one SQL row that joins several tables, built as the ORM's
select_related builds them (each field's converters applied): for the few hot paths where
building the ORM's joined query costs more than running it."""

from django.db import connection
from django.db.models import Model

_converters: dict[type[Model], list[tuple]] = {}


def columns(model: type[Model], alias: str) -> str:
    """The model's columns, in the order instances() reads them, of the table named `alias`."""
    return ", ".join(f'{alias}."{field.column}"' for field in model._meta.concrete_fields)


def instances(row: tuple, *models: type[Model]) -> list[Model | None]:
    """The row, holding each model's columns() in turn, as an instance of each; None for a
    model whose primary key is null (an outer join that found nothing)."""
    found, start = [], 0
    for model in models:
        fields = model._meta.concrete_fields
        values = list(row[start : start + len(fields)])
        start += len(fields)
        if values[fields.index(model._meta.pk)] is None:
            found.append(None)
            continue
        for index, expression, converters in _field_converters(model):
            for converter in converters:
                values[index] = converter(values[index], expression, connection)
        found.append(model.from_db(connection.alias, [field.attname for field in fields], values))
    return found


def _field_converters(model: type[Model]) -> list[tuple]:
    """(position, column, converters) of the model's fields that have converters, as the ORM's
    compiler finds them (a geometry's, a JSON field's)."""
    if model not in _converters:
        found = []
        for index, field in enumerate(model._meta.concrete_fields):
            expression = field.get_col(model._meta.db_table)
            converters = connection.ops.get_db_converters(expression) + expression.get_db_converters(connection)
            if converters:
                found.append((index, expression, converters))
        _converters[model] = found
    return _converters[model]
