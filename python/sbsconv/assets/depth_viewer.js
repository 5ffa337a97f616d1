// sbsconv's depth viewer (python/sbsconv/viewer.py): a clip's depth as a moving, coloured point
// cloud, in plain WebGL 1. Every frame is a grid of points (u, v) whose depth z comes from the
// frame's 16-bit codes (log-spaced between the clip's nearest and farthest depth); the vertex
// shader places them through the pinhole (the field of view) and, when the depth file holds
// the camera's poses, into the world by the frame's camera-to-world transform. Points on an
// edge between depth layers (flagged by the page's maker) are dropped unless asked for; the
// subject mask tints the subject. Orbit: drag; zoom: wheel; play/pause, a frame slider, the
// camera path and frustum, all drawn into one canvas. The page reads its data from the
// <script type="application/json" id="sbs-depth-data"> element.
(function () {
  "use strict";
  const data = JSON.parse(document.getElementById("sbs-depth-data").textContent);
  const canvas = document.getElementById("sbs-depth-canvas");
  const status = document.getElementById("sbs-depth-status");
  const gl = canvas.getContext("webgl", { preserveDrawingBuffer: true, antialias: true });
  // A lost context (the browser reclaims WebGL under memory pressure) leaves a blank canvas: say
  // so, and start again from the page's data when the browser gives the context back.
  canvas.addEventListener("webglcontextlost", (e) => {
    e.preventDefault();
    canvas.dataset.error = "context-lost";
    status.textContent = "WebGL was interrupted by the browser; the view restarts when it comes back";
  });
  canvas.addEventListener("webglcontextrestored", () => window.location.reload());
  if (!gl) {
    status.textContent = "WebGL is not available in this browser";
    canvas.dataset.error = "no-webgl";
    return;
  }
  const decode = (b64, Type) => {
    const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
    return new Type(bytes.buffer);
  };
  const W = data.grid[0], H = data.grid[1], N = data.frames;
  const count = W * H;
  const codes = decode(data.depth, Uint16Array); // N * count
  const colours = decode(data.rgb, Uint8Array); // N * count * 3
  const flags = decode(data.flags, Uint8Array); // N * count: 1 edge, 2 subject
  const focal = (data.size[0] / 2) / Math.tan((data.fov_degrees * Math.PI) / 360);
  const scaleU = data.size[0] / W, scaleV = data.size[1] / H;
  const logNear = Math.log(data.near), logSpan = Math.log(data.far) - Math.log(data.near);

  // the grid's rays (x, y at z = 1, OpenCV axes: x right, y down), the same every frame
  const rays = new Float32Array(count * 2);
  for (let v = 0; v < H; v++) {
    for (let u = 0; u < W; u++) {
      const i = v * W + u;
      rays[2 * i] = ((u + 0.5) * scaleU - data.size[0] / 2) / focal;
      rays[2 * i + 1] = ((v + 0.5) * scaleV - data.size[1] / 2) / focal;
    }
  }
  const vs = `
    attribute vec2 ray; attribute float depth; attribute vec3 colour; attribute float flag;
    uniform mat4 view; uniform mat4 pose; uniform float showEdges; uniform float showMask; uniform float pointSize;
    varying vec3 tint;
    void main() {
      float edge = mod(flag, 2.0); float subject = step(1.5, flag);
      vec4 p = pose * vec4(ray * depth, depth, 1.0);
      gl_Position = view * vec4(p.x, -p.y, -p.z, 1.0);
      if (edge > 0.5 && showEdges < 0.5) gl_Position = vec4(2.0, 2.0, 2.0, 1.0);
      gl_PointSize = pointSize;
      tint = colour;
      if (subject > 0.5 && showMask > 0.5) tint = mix(colour, vec3(1.0, 0.25, 0.2), 0.45);
    }`;
  const fs = `precision mediump float; varying vec3 tint; void main() { gl_FragColor = vec4(tint, 1.0); }`;
  const lineVs = `attribute vec3 position; uniform mat4 view; void main() {
      gl_Position = view * vec4(position.x, -position.y, -position.z, 1.0); }`;
  const lineFs = `precision mediump float; uniform vec3 colour; void main() { gl_FragColor = vec4(colour, 1.0); }`;
  const compile = (type, source) => {
    const s = gl.createShader(type);
    gl.shaderSource(s, source);
    gl.compileShader(s);
    if (!gl.getShaderParameter(s, gl.COMPILE_STATUS)) throw new Error(gl.getShaderInfoLog(s));
    return s;
  };
  const program = (v, f) => {
    const p = gl.createProgram();
    gl.attachShader(p, compile(gl.VERTEX_SHADER, v));
    gl.attachShader(p, compile(gl.FRAGMENT_SHADER, f));
    gl.linkProgram(p);
    return p;
  };
  const points = program(vs, fs);
  const lines = program(lineVs, lineFs);
  const buffer = (array) => {
    const b = gl.createBuffer();
    gl.bindBuffer(gl.ARRAY_BUFFER, b);
    gl.bufferData(gl.ARRAY_BUFFER, array, gl.DYNAMIC_DRAW);
    return b;
  };
  const rayBuffer = buffer(rays);
  const depthBuffer = buffer(new Float32Array(count));
  const colourBuffer = buffer(new Uint8Array(count * 3));
  const flagBuffer = buffer(new Float32Array(count));
  const lineBuffer = buffer(new Float32Array(0));

  // 4x4 matrices, column-major as WebGL takes them
  const multiply = (a, b) => {
    const o = new Float32Array(16);
    for (let c = 0; c < 4; c++) for (let r = 0; r < 4; r++) {
      let s = 0;
      for (let k = 0; k < 4; k++) s += a[k * 4 + r] * b[c * 4 + k];
      o[c * 4 + r] = s;
    }
    return o;
  };
  const perspective = (fovy, aspect, near, far) => {
    const f = 1 / Math.tan(fovy / 2), o = new Float32Array(16);
    o[0] = f / aspect; o[5] = f; o[10] = (far + near) / (near - far); o[11] = -1; o[14] = (2 * far * near) / (near - far);
    return o;
  };
  const translation = (x, y, z) => Float32Array.from([1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, x, y, z, 1]);
  const rotationX = (a) => Float32Array.from([1, 0, 0, 0, 0, Math.cos(a), Math.sin(a), 0, 0, -Math.sin(a), Math.cos(a), 0, 0, 0, 0, 1]);
  const rotationY = (a) => Float32Array.from([Math.cos(a), 0, -Math.sin(a), 0, 0, 1, 0, 0, Math.sin(a), 0, Math.cos(a), 0, 0, 0, 0, 1]);
  const poseMatrix = (k) => {
    if (!data.poses) return translation(0, 0, 0);
    const m = data.poses[k]; // 3x4 row-major
    return Float32Array.from([m[0], m[4], m[8], 0, m[1], m[5], m[9], 0, m[2], m[6], m[10], 0, m[3], m[7], m[11], 1]);
  };

  const state = { frame: 0, playing: true, yaw: 0, pitch: 0, distance: data.focus * 1.6, edges: false,
                  mask: data.has_mask, path: !!data.poses, drawn: 0 };
  const target = data.focus; // orbit about a point this far ahead of the first camera

  function upload(k) {
    const z = new Float32Array(count), f = new Float32Array(count);
    for (let i = 0; i < count; i++) {
      z[i] = Math.exp(logNear + (codes[k * count + i] / 65535) * logSpan);
      f[i] = flags[k * count + i];
    }
    gl.bindBuffer(gl.ARRAY_BUFFER, depthBuffer); gl.bufferData(gl.ARRAY_BUFFER, z, gl.DYNAMIC_DRAW);
    gl.bindBuffer(gl.ARRAY_BUFFER, flagBuffer); gl.bufferData(gl.ARRAY_BUFFER, f, gl.DYNAMIC_DRAW);
    gl.bindBuffer(gl.ARRAY_BUFFER, colourBuffer);
    gl.bufferData(gl.ARRAY_BUFFER, colours.subarray(k * count * 3, (k + 1) * count * 3), gl.DYNAMIC_DRAW);
  }
  const attribute = (p, name, b, size, type, normalised) => {
    const at = gl.getAttribLocation(p, name);
    gl.bindBuffer(gl.ARRAY_BUFFER, b);
    gl.enableVertexAttribArray(at);
    gl.vertexAttribPointer(at, size, type, normalised, 0, 0);
    return at;
  };
  function frustum(k) {
    // the camera at frame k: its centre and the four corners of its image at depth focus/4
    const m = poseMatrix(k), d = target / 4, out = [];
    const corner = (x, y) => [x * d, y * d, d];
    const apply = (p) => [m[0] * p[0] + m[4] * p[1] + m[8] * p[2] + m[12],
                          m[1] * p[0] + m[5] * p[1] + m[9] * p[2] + m[13],
                          m[2] * p[0] + m[6] * p[1] + m[10] * p[2] + m[14]];
    const hx = data.size[0] / 2 / focal, hy = data.size[1] / 2 / focal;
    const c = apply([0, 0, 0]);
    const cs = [corner(-hx, -hy), corner(hx, -hy), corner(hx, hy), corner(-hx, hy)].map(apply);
    for (let i = 0; i < 4; i++) out.push(...c, ...cs[i], ...cs[i], ...cs[(i + 1) % 4]);
    return out;
  }
  function draw() {
    if (gl.isContextLost()) return; // the status says so; the page starts again when it is back
    const aspect = canvas.width / canvas.height;
    const view = multiply(perspective(0.9, aspect, 0.01, data.far * 10),
      multiply(translation(0, 0, -state.distance), multiply(rotationX(state.pitch),
        multiply(rotationY(state.yaw), translation(0, 0, target)))));
    gl.viewport(0, 0, canvas.width, canvas.height);
    gl.clearColor(0.06, 0.07, 0.09, 1);
    gl.clear(gl.COLOR_BUFFER_BIT | gl.DEPTH_BUFFER_BIT);
    gl.enable(gl.DEPTH_TEST);
    gl.useProgram(points);
    attribute(points, "ray", rayBuffer, 2, gl.FLOAT, false);
    attribute(points, "depth", depthBuffer, 1, gl.FLOAT, false);
    attribute(points, "colour", colourBuffer, 3, gl.UNSIGNED_BYTE, true);
    attribute(points, "flag", flagBuffer, 1, gl.FLOAT, false);
    gl.uniformMatrix4fv(gl.getUniformLocation(points, "view"), false, view);
    gl.uniformMatrix4fv(gl.getUniformLocation(points, "pose"), false, poseMatrix(state.frame));
    gl.uniform1f(gl.getUniformLocation(points, "showEdges"), state.edges ? 1 : 0);
    gl.uniform1f(gl.getUniformLocation(points, "showMask"), state.mask ? 1 : 0);
    gl.uniform1f(gl.getUniformLocation(points, "pointSize"), Math.max(1.5, canvas.width / W / 1.6));
    gl.drawArrays(gl.POINTS, 0, count);
    if (state.path && data.poses) {
      gl.useProgram(lines);
      const path = [];
      for (let k = 0; k + 1 < N; k++) path.push(...poseMatrix(k).slice(12, 15), ...poseMatrix(k + 1).slice(12, 15));
      const all = new Float32Array([...path, ...frustum(state.frame)]);
      gl.bindBuffer(gl.ARRAY_BUFFER, lineBuffer);
      gl.bufferData(gl.ARRAY_BUFFER, all, gl.DYNAMIC_DRAW);
      attribute(lines, "position", lineBuffer, 3, gl.FLOAT, false);
      gl.uniformMatrix4fv(gl.getUniformLocation(lines, "view"), false, view);
      gl.uniform3f(gl.getUniformLocation(lines, "colour"), 1.0, 0.8, 0.2);
      gl.drawArrays(gl.LINES, 0, all.length / 3);
    }
    state.drawn += 1;
    canvas.dataset.frame = String(state.frame);
    canvas.dataset.drawn = String(state.drawn);
    canvas.dataset.view = [state.yaw.toFixed(3), state.pitch.toFixed(3), state.distance.toFixed(3)].join(",");
    status.textContent = `frame ${state.frame + 1} / ${N}` + (data.times ? ` (${data.times[state.frame].toFixed(2)} s)` : "");
    slider.value = String(state.frame);
  }

  // ---- controls
  const slider = document.getElementById("sbs-depth-frame");
  slider.max = String(N - 1);
  slider.addEventListener("input", () => { state.frame = Number(slider.value); upload(state.frame); draw(); });
  const play = document.getElementById("sbs-depth-play");
  play.addEventListener("click", () => { state.playing = !state.playing; play.textContent = state.playing ? "Pause" : "Play"; });
  const toggle = (id, key) => {
    const box = document.getElementById(id);
    box.checked = state[key];
    box.addEventListener("change", () => { state[key] = box.checked; draw(); });
    return box;
  };
  toggle("sbs-depth-edges", "edges");
  toggle("sbs-depth-mask", "mask").disabled = !data.has_mask;
  toggle("sbs-depth-path", "path").disabled = !data.poses;
  let dragging = null;
  canvas.addEventListener("mousedown", (e) => { dragging = [e.clientX, e.clientY]; });
  window.addEventListener("mouseup", () => { dragging = null; });
  window.addEventListener("mousemove", (e) => {
    if (!dragging) return;
    state.yaw += (e.clientX - dragging[0]) * 0.008;
    state.pitch = Math.max(-1.4, Math.min(1.4, state.pitch + (e.clientY - dragging[1]) * 0.008));
    dragging = [e.clientX, e.clientY];
    draw();
  });
  canvas.addEventListener("wheel", (e) => {
    e.preventDefault();
    state.distance = Math.max(target * 0.05, Math.min(data.far * 4, state.distance * Math.exp(e.deltaY * 0.001)));
    draw();
  }, { passive: false });
  let last = 0, shown = false;
  function tick(now) {
    if (!shown) {
      // the first frame the browser displays draws again: a draw made while the page was still
      // being laid out (a hidden or loading frame) may never reach the screen
      shown = true;
      draw();
    } else if (state.playing && N > 1 && now - last >= 1000 / data.fps) {
      last = now;
      state.frame = (state.frame + 1) % N;
      upload(state.frame);
      draw();
    }
    requestAnimationFrame(tick);
  }
  upload(0);
  draw();
  requestAnimationFrame(tick);
})();
