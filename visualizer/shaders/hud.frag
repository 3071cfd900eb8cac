#version 330

// The panel is painted by pygame at screen resolution and drawn 1:1 with straight alpha.
uniform sampler2D overlay;

in vec2 uv;
out vec4 f_color;

void main() {
    f_color = texture(overlay, uv);
}
