// Aperture citizen portal: live timeline. Progressive enhancement only — every page works without it.
// New accesses arrive as Server-Sent Events whose data is the timeline entry, rendered on the server
// with the same template as the page; they are put at the top of the list and announced politely.
(function () {
  'use strict';
  var list = document.getElementById('timeline');
  if (!list || list.getAttribute('data-live') !== 'on' || !('EventSource' in window)) {
    return;
  }
  var status = document.getElementById('live-status');
  var indicator = document.getElementById('live-indicator');
  var source = new EventSource(list.getAttribute('data-events'));
  source.addEventListener('open', function () {
    if (indicator) { indicator.hidden = false; }
  });
  source.addEventListener('access', function (ev) {
    var tpl = document.createElement('template');
    tpl.innerHTML = ev.data;
    var entry = tpl.content.firstElementChild;
    if (!entry || !entry.id || document.getElementById(entry.id)) {
      return;
    }
    entry.classList.add('entry--new');
    list.insertBefore(entry, list.firstElementChild);
    var empty = document.getElementById('timeline-empty');
    if (empty) { empty.hidden = true; }
    if (status) {
      status.textContent = entry.getAttribute('data-announce') || '';
    }
  });
  source.addEventListener('signed-out', function () {
    source.close();
    if (indicator) { indicator.hidden = true; }
  });
})();
