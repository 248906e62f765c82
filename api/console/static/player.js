// The player page: a click on the waveform plays from that moment, and a playhead on the waveform
// follows the audio. The waveform's x axis is the recording's time, end to end, so the clicked
// fraction of its width is that fraction of the duration. Seeking is the <audio> element's own
// (HTTP range requests under the listening grant). Served from 'self' (the console's CSP).
(function () {
  "use strict";
  var audio = document.getElementById("player");
  var wave = document.getElementById("waveform");
  var head = document.getElementById("playhead");
  if (!audio || !wave || !head) {
    return;
  }

  function duration() {
    var d = audio.duration;
    return isFinite(d) && d > 0 ? d : 0;
  }

  function draw() {
    var d = duration();
    var fraction = d ? Math.min(1, Math.max(0, audio.currentTime / d)) : 0;
    head.style.left = 100 * fraction + "%";
  }

  wave.addEventListener("click", function (event) {
    var box = wave.getBoundingClientRect();
    var d = duration();
    if (!d || box.width <= 0) {
      return; // the length is not known yet (metadata still loading): nothing to map the click to
    }
    var fraction = Math.min(1, Math.max(0, (event.clientX - box.left) / box.width));
    audio.currentTime = fraction * d;
    draw();
  });

  ["timeupdate", "seeking", "seeked", "loadedmetadata", "durationchange", "ended"].forEach(function (name) {
    audio.addEventListener(name, draw);
  });
  draw();
})();
