"""The Python `caldav` library through the gateway (matrix::<server>::caldav_library).

Environment: URL (the gateway's root), DAV_USER, DAV_PASSWORD, CALENDAR (a name to create),
SYNC (1: the server has sync-collection). Prints one JSON line with what it saw.
"""
import json
import os

import caldav

EVENT = """BEGIN:VCALENDAR
VERSION:2.0
PRODID:-//davpush//matrix caldav//EN
BEGIN:VEVENT
UID:matrix-caldav-1
DTSTAMP:20260101T000000Z
DTSTART:20261201T100000Z
DTEND:20261201T110000Z
SUMMARY:{summary}
END:VEVENT
END:VCALENDAR
"""

client = caldav.DAVClient(url=os.environ["URL"], username=os.environ["DAV_USER"], password=os.environ["DAV_PASSWORD"])
principal = client.principal()
cal = principal.make_calendar(name=os.environ["CALENDAR"], cal_id=os.environ["CALENDAR"])
synced = None
if os.environ.get("SYNC") == "1":
    before = cal.objects_by_sync_token(load_objects=False)
    token = before.sync_token
ev = cal.save_event(EVENT.format(summary="matrix event"))
ev.load()
ev.icalendar_component["summary"] = "matrix event (changed)"
ev.save()
summaries = [str(e.icalendar_component["summary"]) for e in cal.events()]
if os.environ.get("SYNC") == "1":
    changed = cal.objects_by_sync_token(sync_token=token, load_objects=False)
    synced = len(list(changed))
assert any(c.url == cal.url for c in principal.calendars()), "the new calendar is listed"
ev.delete()
after_delete = len(cal.events())
cal.delete()
print(json.dumps({"calendar": str(cal.url), "summaries": summaries, "synced": synced, "after_delete": after_delete}))
