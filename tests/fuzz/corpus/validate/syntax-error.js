module.exports = { metadata: { name: 'x' 
