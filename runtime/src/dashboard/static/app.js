// The dashboard's only script (the Content-Security-Policy allows no other):
// asks before destructive actions, and reloads the page every 5 s while the
// "live" box is ticked (remembered per browser).
'use strict';

document.addEventListener('submit', (event) => {
  const form = event.target;
  const question = form.getAttribute('data-confirm');
  if (question && !window.confirm(question)) {
    event.preventDefault();
  }
});

document.addEventListener('DOMContentLoaded', () => {
  const live = document.getElementById('live');
  if (!live) return;
  live.checked = localStorage.getItem('stoker-live') === 'on';
  live.addEventListener('change', () => {
    localStorage.setItem('stoker-live', live.checked ? 'on' : 'off');
  });
  setInterval(() => {
    if (live.checked) window.location.reload();
  }, 5000);
});
