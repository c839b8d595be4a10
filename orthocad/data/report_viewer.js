// orthocad's 3D view: a small self-contained WebGL viewer (no libraries, no network).
//
// Each <canvas class="view3d" data-scene="KEY"> shows window.ORTHOCAD_SCENES[KEY], which a
// scene_KEY.js file next to this one defines:
//   {yaw: initial azimuth (rad),
//    meshes: [{name, kind: "mesh" | "points", color: [r, g, b], lo: [x, y, z], span: [x, y, z],
//              positions: base64 little-endian uint16 triples (lo + q / 65535 * span, mm),
//              indices: base64 little-endian uint16 triangles (kind "mesh" only)}]}
// Drag rotates, the wheel zooms, a double click resets; a checkbox per mesh shows or hides it.
(function () {
  "use strict";

  var VERTEX_SHADER = [
    "attribute vec3 aPosition;",
    "attribute vec3 aNormal;",
    "uniform mat4 uModelView;",
    "uniform mat4 uProjection;",
    "uniform float uPointSize;",
    "varying vec3 vNormal;",
    "varying float vHeight;",
    "void main() {",
    "  vNormal = (uModelView * vec4(aNormal, 0.0)).xyz;",
    "  vHeight = aPosition.z;",
    "  gl_PointSize = uPointSize;",
    "  gl_Position = uProjection * uModelView * vec4(aPosition, 1.0);",
    "}"
  ].join("\n");

  // Meshes: two-sided Lambert from a headlight (a scan's winding may be inconsistent).
  // Points: coloured by height, low dark to high light.
  var FRAGMENT_SHADER = [
    "precision mediump float;",
    "uniform vec3 uColor;",
    "uniform float uLit;",
    "uniform vec2 uHeightRange;",
    "varying vec3 vNormal;",
    "varying float vHeight;",
    "void main() {",
    "  float t = clamp((vHeight - uHeightRange.x) / (uHeightRange.y - uHeightRange.x), 0.0, 1.0);",
    "  if (uLit > 0.5) {",
    "    gl_FragColor = vec4(uColor * (0.3 + 0.7 * abs(normalize(vNormal).z)), 1.0);",
    "  } else {",
    "    gl_FragColor = vec4(uColor * (0.45 + 0.55 * t), 1.0);",
    "  }",
    "}"
  ].join("\n");

  function decode(base64, Type) {
    var text = atob(base64);
    var bytes = new Uint8Array(text.length);
    for (var i = 0; i < text.length; i++) bytes[i] = text.charCodeAt(i);
    return new Type(bytes.buffer);
  }

  function positionsOf(mesh) {
    var q = decode(mesh.positions, Uint16Array);
    var out = new Float32Array(q.length);
    for (var i = 0; i < q.length; i++) {
      var axis = i % 3;
      out[i] = mesh.lo[axis] + (q[i] / 65535) * mesh.span[axis];
    }
    return out;
  }

  function vertexNormals(positions, indices) {
    var normals = new Float32Array(positions.length);
    for (var f = 0; f < indices.length; f += 3) {
      var a = 3 * indices[f], b = 3 * indices[f + 1], c = 3 * indices[f + 2];
      var ux = positions[b] - positions[a], uy = positions[b + 1] - positions[a + 1];
      var uz = positions[b + 2] - positions[a + 2];
      var vx = positions[c] - positions[a], vy = positions[c + 1] - positions[a + 1];
      var vz = positions[c + 2] - positions[a + 2];
      var nx = uy * vz - uz * vy, ny = uz * vx - ux * vz, nz = ux * vy - uy * vx;
      for (var k = 0; k < 3; k++) {
        var v = 3 * indices[f + k];
        normals[v] += nx; normals[v + 1] += ny; normals[v + 2] += nz;
      }
    }
    return normals;
  }

  function perspective(fovy, aspect, near, far) {
    var f = 1 / Math.tan(fovy / 2), d = near - far;
    return [f / aspect, 0, 0, 0, 0, f, 0, 0, 0, 0, (far + near) / d, -1,
            0, 0, (2 * far * near) / d, 0];
  }

  // Column-major view matrix looking from eye at target, +Z up.
  function lookAt(eye, target) {
    var fx = target[0] - eye[0], fy = target[1] - eye[1], fz = target[2] - eye[2];
    var fl = Math.hypot(fx, fy, fz); fx /= fl; fy /= fl; fz /= fl;
    var sx = fy, sy = -fx, sz = 0;  // forward × up(0, 0, 1)
    var sl = Math.hypot(sx, sy) || 1; sx /= sl; sy /= sl;
    var ux = sy * fz - sz * fy, uy = sz * fx - sx * fz, uz = sx * fy - sy * fx;
    return [sx, ux, -fx, 0, sy, uy, -fy, 0, sz, uz, -fz, 0,
            -(sx * eye[0] + sy * eye[1] + sz * eye[2]),
            -(ux * eye[0] + uy * eye[1] + uz * eye[2]),
            fx * eye[0] + fy * eye[1] + fz * eye[2], 1];
  }

  function compile(gl, type, source) {
    var shader = gl.createShader(type);
    gl.shaderSource(shader, source);
    gl.compileShader(shader);
    if (!gl.getShaderParameter(shader, gl.COMPILE_STATUS)) {
      throw new Error("shader: " + gl.getShaderInfoLog(shader));
    }
    return shader;
  }

  function program(gl) {
    var p = gl.createProgram();
    gl.attachShader(p, compile(gl, gl.VERTEX_SHADER, VERTEX_SHADER));
    gl.attachShader(p, compile(gl, gl.FRAGMENT_SHADER, FRAGMENT_SHADER));
    gl.linkProgram(p);
    if (!gl.getProgramParameter(p, gl.LINK_STATUS)) {
      throw new Error("program: " + gl.getProgramInfoLog(p));
    }
    return p;
  }

  function buffer(gl, target, data) {
    var b = gl.createBuffer();
    gl.bindBuffer(target, b);
    gl.bufferData(target, data, gl.STATIC_DRAW);
    return b;
  }

  function View(canvas, scene) {
    var gl = canvas.getContext("webgl", {antialias: true, preserveDrawingBuffer: true});
    if (!gl) {
      canvas.insertAdjacentHTML("afterend",
        "<p class=\"note\">This browser has no WebGL: the 3D view is not available.</p>");
      return;
    }
    this.canvas = canvas;
    this.gl = gl;
    this.prog = program(gl);
    this.items = [];
    var lo = [Infinity, Infinity, Infinity], hi = [-Infinity, -Infinity, -Infinity];
    for (var m = 0; m < scene.meshes.length; m++) {
      var mesh = scene.meshes[m];
      var positions = positionsOf(mesh);
      var item = {name: mesh.name, color: mesh.color, visible: true, points: mesh.kind === "points",
                  position: buffer(gl, gl.ARRAY_BUFFER, positions),
                  zLo: mesh.lo[2], zHi: mesh.lo[2] + Math.max(mesh.span[2], 1e-6)};
      if (item.points) {
        item.count = positions.length / 3;
        item.normal = buffer(gl, gl.ARRAY_BUFFER, new Float32Array(positions.length));
      } else {
        var indices = decode(mesh.indices, Uint16Array);
        item.count = indices.length;
        item.normal = buffer(gl, gl.ARRAY_BUFFER, vertexNormals(positions, indices));
        item.index = buffer(gl, gl.ELEMENT_ARRAY_BUFFER, indices);
      }
      for (var a = 0; a < 3; a++) {
        lo[a] = Math.min(lo[a], mesh.lo[a]);
        hi[a] = Math.max(hi[a], mesh.lo[a] + mesh.span[a]);
      }
      this.items.push(item);
    }
    this.center = [(lo[0] + hi[0]) / 2, (lo[1] + hi[1]) / 2, (lo[2] + hi[2]) / 2];
    this.radius = Math.max(Math.hypot(hi[0] - lo[0], hi[1] - lo[1], hi[2] - lo[2]) / 2, 1);
    this.initialYaw = scene.yaw || 0;
    this.reset();
    this.controls();
    this.draw();
  }

  View.prototype.reset = function () {
    this.yaw = this.initialYaw;
    this.pitch = 0.45;
    this.distance = 3.4 * this.radius;
  };

  View.prototype.controls = function () {
    var view = this, canvas = this.canvas, last = null;
    canvas.addEventListener("pointerdown", function (event) {
      last = [event.clientX, event.clientY];
      if (canvas.setPointerCapture) canvas.setPointerCapture(event.pointerId);
    });
    canvas.addEventListener("pointermove", function (event) {
      if (!last) return;
      view.yaw -= (event.clientX - last[0]) * 0.01;
      view.pitch = Math.max(-1.5, Math.min(1.5, view.pitch + (event.clientY - last[1]) * 0.01));
      last = [event.clientX, event.clientY];
      view.draw();
    });
    function release() { last = null; }
    canvas.addEventListener("pointerup", release);
    canvas.addEventListener("pointercancel", release);
    canvas.addEventListener("wheel", function (event) {
      event.preventDefault();
      view.distance = Math.max(0.3 * view.radius,
        Math.min(10 * view.radius, view.distance * Math.exp(event.deltaY * 0.001)));
      view.draw();
    }, {passive: false});
    canvas.addEventListener("dblclick", function () { view.reset(); view.draw(); });
    var box = document.createElement("div");
    box.className = "view-toggles";
    this.items.forEach(function (item) {
      var label = document.createElement("label");
      var input = document.createElement("input");
      input.type = "checkbox";
      input.checked = true;
      input.addEventListener("change", function () { item.visible = input.checked; view.draw(); });
      label.appendChild(input);
      label.appendChild(document.createTextNode(" " + item.name));
      box.appendChild(label);
    });
    canvas.parentNode.insertBefore(box, canvas.nextSibling);
  };

  View.prototype.draw = function () {
    var gl = this.gl, canvas = this.canvas, p = this.prog;
    var ratio = window.devicePixelRatio || 1;
    var width = Math.max(1, Math.round(canvas.clientWidth * ratio));
    var height = Math.max(1, Math.round(canvas.clientHeight * ratio));
    if (canvas.width !== width || canvas.height !== height) {
      canvas.width = width;
      canvas.height = height;
    }
    gl.viewport(0, 0, width, height);
    gl.clearColor(0.97, 0.97, 0.98, 1);
    gl.clear(gl.COLOR_BUFFER_BIT | gl.DEPTH_BUFFER_BIT);
    gl.enable(gl.DEPTH_TEST);
    gl.useProgram(p);
    var c = this.center, d = this.distance;
    var eye = [c[0] + d * Math.cos(this.pitch) * Math.cos(this.yaw),
               c[1] + d * Math.cos(this.pitch) * Math.sin(this.yaw),
               c[2] + d * Math.sin(this.pitch)];
    gl.uniformMatrix4fv(gl.getUniformLocation(p, "uModelView"), false, lookAt(eye, c));
    gl.uniformMatrix4fv(gl.getUniformLocation(p, "uProjection"), false,
      perspective(0.6, width / height, d / 50, d + 4 * this.radius));
    gl.uniform1f(gl.getUniformLocation(p, "uPointSize"), 2 * ratio);
    var position = gl.getAttribLocation(p, "aPosition"), normal = gl.getAttribLocation(p, "aNormal");
    gl.enableVertexAttribArray(position);
    gl.enableVertexAttribArray(normal);
    for (var i = 0; i < this.items.length; i++) {
      var item = this.items[i];
      if (!item.visible) continue;
      gl.uniform3fv(gl.getUniformLocation(p, "uColor"), item.color);
      gl.uniform1f(gl.getUniformLocation(p, "uLit"), item.points ? 0 : 1);
      gl.uniform2f(gl.getUniformLocation(p, "uHeightRange"), item.zLo, item.zHi);
      gl.bindBuffer(gl.ARRAY_BUFFER, item.position);
      gl.vertexAttribPointer(position, 3, gl.FLOAT, false, 0, 0);
      gl.bindBuffer(gl.ARRAY_BUFFER, item.normal);
      gl.vertexAttribPointer(normal, 3, gl.FLOAT, false, 0, 0);
      if (item.points) {
        gl.drawArrays(gl.POINTS, 0, item.count);
      } else {
        gl.bindBuffer(gl.ELEMENT_ARRAY_BUFFER, item.index);
        gl.drawElements(gl.TRIANGLES, item.count, gl.UNSIGNED_SHORT, 0);
      }
    }
  };

  var scenes = window.ORTHOCAD_SCENES || {};
  var canvases = document.querySelectorAll("canvas.view3d");
  for (var k = 0; k < canvases.length; k++) {
    var scene = scenes[canvases[k].getAttribute("data-scene")];
    if (scene) new View(canvases[k], scene);
  }
})();
