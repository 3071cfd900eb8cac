#version 330

// Every pass draws the same unit quad; `rect` places it, so the dream covers the
// screen and the HUD panel sits where its painter laid it out.
uniform vec4 rect;  // x0, y0, x1, y1 in clip space

in vec2 in_vert;
out vec2 uv;

void main() {
    uv = in_vert;
    gl_Position = vec4(mix(rect.xy, rect.zw, in_vert), 0.0, 1.0);
}
