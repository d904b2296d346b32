from django.db import migrations

# GET reports/{id}/?wait= is woken by this notification instead of polling the row (marketplace/
# report_waits.py). A trigger, so that every path that finishes a report (the worker, a cancel,
# the admin, a bulk update) notifies; PostgreSQL sends it when the transaction commits.
REPORT_FINAL_NOTIFY = """
CREATE FUNCTION marketplace_report_final_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('report_final', NEW.id::text);
    RETURN NULL;
END $$;
CREATE TRIGGER marketplace_report_final_notify AFTER UPDATE OF status ON marketplace_report
    FOR EACH ROW
    WHEN (NEW.status IN ('succeeded', 'failed', 'cancelled') AND OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION marketplace_report_final_notify();
"""
DROP_REPORT_FINAL_NOTIFY = """
DROP TRIGGER marketplace_report_final_notify ON marketplace_report;
DROP FUNCTION marketplace_report_final_notify();
"""


class Migration(migrations.Migration):
    dependencies = [("marketplace", "0026_result_batches")]

    operations = [migrations.RunSQL(REPORT_FINAL_NOTIFY, DROP_REPORT_FINAL_NOTIFY)]
